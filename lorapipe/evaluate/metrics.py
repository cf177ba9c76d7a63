"""Eval loss and perplexity on chat rows, counted on the assistant tokens only.

Rows are encoded with :func:`lorapipe.train.collate.encode_chat` and padded by its
:class:`~lorapipe.train.collate.DataCollator`, so the masking is exactly the one training used: a
tuned model's eval loss here equals the trainer's ``eval_loss`` on the same rows (token-weighted).

The loss is the mean negative log-likelihood per *assistant token over all rows* (not a mean of
per-batch means, which would weigh a short batch like a long one), and perplexity is ``exp(loss)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

from lorapipe.errors import DataError


def eval_loss(model, tokenizer, rows: list[dict[str, Any]], *, max_length: int = 512, batch_size: int = 8,
              progress: Callable[[int], None] | None = None, fast: bool = True,
              weights: str = "fp32") -> dict[str, float | int]:
    """Token-weighted loss and perplexity of ``model`` (as it is: its active adapter, or none under
    ``disable_adapter()``) on canonical chat ``rows``.

    ``fast``/``weights`` (``inference.*``): a Llama-family model on CPU runs lorapipe's decode path
    (:func:`lorapipe.decoding.generate.token_nll`) with those base weights, else transformers' forward.
    fp32 gives transformers' numbers (to ~1e-6); bf16 is ~3x faster on a CPU with AMX and within ~1 %.

    Returns ``{"loss", "perplexity", "tokens", "rows", "truncated", "dropped"}``: ``tokens`` counts the
    assistant tokens scored; rows whose reply was cut away entirely by ``max_length`` are ``dropped``.
    ``progress`` is called with the number of rows just scored. The model's train/eval mode is restored.
    """
    return eval_losses(model, tokenizer, rows, None, max_length=max_length, batch_size=batch_size,
                       progress=progress, fast=fast, weights=weights)[0]


def eval_losses(model, tokenizer, rows: list[dict[str, Any]], adapters: list[str | None] | None, *,
                max_length: int = 512, batch_size: int = 8, progress: Callable[[int], None] | None = None,
                fast: bool = True, weights: str = "fp32") -> list[dict[str, float | int]]:
    """:func:`eval_loss` of a PEFT model with each of ``adapters`` (None: the base, adapters disabled;
    a name: that adapter, which must be the active one on transformers' path). On the fast path the
    adapters score each batch together, sharing the layers below the first adapted one.
    ``adapters=None``: the model as it is, once."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from lorapipe.train.collate import IGNORE, DataCollator, encode_rows

    if not rows:
        raise DataError("eval rows are empty; there is nothing to compute a loss on")
    features, stats = encode_rows(tokenizer, rows, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = DataCollator(pad_token_id=pad)
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory shows at once.
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    device = next(model.parameters()).device
    nll = None
    if fast:
        from lorapipe.decoding import generate as fast_path

        if fast_path.why_not(model) is None:
            nll = partial(fast_path.token_nll, model, weights=weights, adapters=adapters)
    explicit = adapters is not None  # else: one arm, the model as it is
    arms = adapters if adapters is not None else [None]
    totals = [[0.0, 0] for _ in arms]

    def hf(arm: str | None, batch: dict[str, Any]) -> tuple[float, int]:
        scope: Any = contextlib.nullcontext()
        if explicit and arm is None:
            scope = model.disable_adapter()
        elif explicit and arm != getattr(model, "active_adapter", arm):
            raise ValueError(f"adapter {arm!r} is not the active one ({model.active_adapter!r})")
        with scope, torch.inference_mode():
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
        # Token t predicts token t+1; only positions whose *target* is an assistant token count.
        labels = batch["labels"][:, 1:].to(device)
        keep = labels != IGNORE
        picked = logits[:, :-1][keep].float()
        return float(F.cross_entropy(picked, labels[keep], reduction="sum")), int(keep.sum())

    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = collate([features[i] for i in order[start:start + batch_size]])
            parts = (nll(batch["input_ids"], batch["attention_mask"], batch["labels"]) if nll is not None
                     else [hf(arm, batch) for arm in arms])
            for total, (part, count) in zip(totals, parts, strict=True):
                total[0] += part
                total[1] += count
            if progress:
                progress(len(batch["input_ids"]))
    finally:
        model.train(was_training)
    if progress and stats["dropped_no_labels"]:
        progress(stats["dropped_no_labels"])
    if totals[0][1] == 0:
        raise DataError(f"no assistant tokens left in {len(rows)} eval row(s) after truncation to "
                        f"{max_length} tokens; raise train.max_seq_length")
    return [{"loss": nll_sum / tokens, "perplexity": math.exp(min(nll_sum / tokens, 700.0)), "tokens": tokens,
             "rows": len(features), "truncated": stats["truncated"], "dropped": stats["dropped_no_labels"]}
            for nll_sum, tokens in totals]
