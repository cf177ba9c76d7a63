"""Padding-free packing: the rows of a micro-batch become one sequence, with no compute on padding.

:class:`PackingCollator` concatenates a micro-batch's rows into a single ``(1, total)`` row instead
of padding them to the longest one. Each row keeps its own ``position_ids`` (restarting at 0) and
the first label of every row is masked, so no token is trained to predict the next row. It also
returns ``cu_seq_lens_q``/``cu_seq_lens_k`` (the row boundaries, as flash-attention's varlen kernels
take them), which transformers forwards to the attention function.

The rows must not attend to each other. transformers builds a block-diagonal ``total x total`` mask
from restarting ``position_ids`` for the ``sdpa``/``eager`` kernels, but those kernels then compute
the whole square and throw most of it away (the attention FLOPs grow with the square of the
micro-batch's total length). :func:`use_packed_attention` instead registers an attention function,
``lorapipe_packed_sdpa``, that runs causal SDPA on each row's slice of the packed sequence: exactly
the FLOPs of the unpadded rows, on any device. Batches without ``cu_seq_lens_q`` (padded batches)
go through plain SDPA with the usual mask, so the same model also evaluates and generates normally.

A micro-batch holds the rows the sampler gave it, padded or packed; only the padding disappears.
Per-row losses, the step's loss and the trained adapter equal the padded ones up to float rounding
(tests/unit/test_train_speed.py checks all three). Flash-attention kernels (``flash_attention_2/3``)
read ``cu_seq_lens_*`` themselves and are left in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from lorapipe.train.collate import IGNORE

ATTN_NAME = "lorapipe_packed_sdpa"
# Kernels that read the packed rows' boundaries (``cu_seq_lens_*``) themselves.
NATIVE_VARLEN = ("flash_attention_2", "flash_attention_3")
_registered = False


@dataclass
class PackingCollator:
    """Concatenates a micro-batch into one row, with per-row ``position_ids`` and boundaries."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        bounds = [0]
        for f in features:
            n = len(f["input_ids"])
            ids += list(f["input_ids"])
            row_labels = list(f["labels"])
            row_labels[0] = IGNORE  # the previous row's last token must not learn to predict this one
            labels += row_labels
            positions += range(n)
            bounds.append(bounds[-1] + n)
        cu = torch.tensor(bounds, dtype=torch.int32)
        longest = max(b - a for a, b in pairwise(bounds))
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                "max_length_q": longest, "max_length_k": longest}


def _packed_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA over each packed row separately (causal within a row); plain SDPA otherwise."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    if cu is None or query.shape[0] != 1 or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    bounds = cu.tolist()
    outs = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                   is_causal=True, **kwargs)[0]
            for a, b in pairwise(bounds)]
    return torch.cat(outs, dim=1), None


def _packed_mask(*args, **kwargs):
    """The SDPA mask, except for packed batches, whose rows are separated by the attention itself."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, _packed_sdpa)
    AttentionMaskInterface.register(ATTN_NAME, _packed_mask)
    _registered = True


def packed_attention_unsupported(model) -> str | None:
    """Why ``model`` cannot keep packed rows apart with :data:`ATTN_NAME` or natively (``None``: it can)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    impl = getattr(cfg, "_attn_implementation", None)
    if impl in NATIVE_VARLEN:
        return None
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) is not False:
        return "it uses sliding-window attention"
    if impl not in ("sdpa", "eager", ATTN_NAME):
        return f"it runs `{impl}` attention"
    if hasattr(model, "_can_set_attn_implementation") and not model._can_set_attn_implementation():
        return "its attention does not go through transformers' AttentionInterface"
    return None


def use_packed_attention(model) -> str | None:
    """Switch ``model`` (PEFT-wrapped or not) to :data:`ATTN_NAME`; return the previous implementation.

    Returns ``None`` when nothing was switched: flash-attention kernels take the packed rows'
    ``cu_seq_lens`` natively, and a model that cannot run packed rows (see
    :func:`packed_attention_unsupported`) is left as it is.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if packed_attention_unsupported(base) or base.config._attn_implementation in NATIVE_VARLEN:
        return None
    register()
    previous = base.config._attn_implementation
    base.set_attn_implementation(ATTN_NAME)
    return previous


def restore_attention(model, previous: str | None) -> None:
    if previous is None:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(previous)
