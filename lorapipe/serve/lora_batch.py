"""Stacked LoRA: every row of a batch applies its own adapter with two batched matmuls per layer.

PEFT's mixed-batch path (``adapter_names``) loops over the adapters present in the batch in every
LoRA layer and builds index lists in Python; with 8 adapters that costs more than the base model's
own matmuls on a small model (see ``bench/serve_mixed.py --kernel peft``). Here, as in
Punica/S-LoRA, each adapted layer keeps the loaded adapters' weights stacked, transposed for the
matmuls that read them — ``A[slot]^T (in x r)`` and ``(B[slot] * scaling)^T (r x out)``, contiguous (a
transposed view costs BLAS's small-matrix kernels a quarter more time at decode sizes).
Rows are kept grouped by adapter (:mod:`lorapipe.decoding.batch` sorts the batch), so a step runs two
small matmuls per adapter present and reads each adapter's weights once, with no per-row copies::

    out[rows of a] += (x[rows of a] @ A[a]^T) @ B[a]^T      # for each adapter a in the batch

On the fast decode path (:mod:`lorapipe.decoding.llama`), a pass with three or more adapter runs
instead gathers its rows per slot and takes two ``bmm`` over the stacks' slot range for all of them
(:meth:`StackedLoRA.stacks`): 0.22 ms a layer instead of 0.50 at 8 adapters.

Loading is a copy into a free slot. PEFT wraps a layer the first time some adapter targets it (and
loads that adapter, which checks its state dict); afterwards new adapters for already-wrapped
layers never go through PEFT's injection, which walks the whole module tree and costs ~0.3 s on a
135M model. Rank and alpha follow PEFT's rules (``rank_pattern``, ``alpha_pattern``, rsLoRA), and
are checked against PEFT's own ``scaling`` whenever PEFT loads an adapter. Adapters outside this
scope (DoRA and other variants, LoRA on embeddings, ``lora_bias``, ``modules_to_save``...) are
refused with a pointer to ``--lora-kernel peft``.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any

import torch

from lorapipe.serve.adapters import BASE_ADAPTER, AdapterRejected

_PREFIX = "base_model.model."
_UNSUPPORTED_CONFIG = ("use_dora", "lora_bias", "modules_to_save", "trainable_token_indices", "target_parameters",
                       "layer_replication")


@dataclass
class _Part:
    path: str  # the layer's module path in the model
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    scaling: float


def _fast_forward(stack: StackedLoRA) -> Any:
    def forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        segments = stack.segments
        if not segments:
            return out
        views = self._lp_views  # per slot: (A^T, (B*s)^T), views into the stacks
        tokens = x.numel() // (x.shape[0] * x.shape[-1])  # per row
        x2 = x.reshape(-1, x.shape[-1])
        o2 = out.view(-1, out.shape[-1])  # a fresh, contiguous output: safe to add into in place
        for slot, start, end in segments:  # the hot path: two matmuls per adapter run, no copies
            a_t, b_t = views[slot]
            o2[start * tokens:end * tokens].addmm_(torch.mm(x2[start * tokens:end * tokens], a_t), b_t)
        return out

    return forward


class StackedLoRA:
    """Slots and stacked weights for the LoRA layers of one model."""

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}  # internal adapter name -> slot (0 is the base)
        self.capacity = 0
        self.layers: list[Any] = []
        self.segments: list[tuple[int, int, int]] = []  # (slot, first row, end row) of the current pass

    # ------------------------------------------------------------------ loading
    def plan(self, model: Any, config: Any, weights: dict[str, torch.Tensor], path: Any) -> tuple[list[_Part], bool]:
        """Match ``weights`` to the model's layers. Returns the parts and whether PEFT must wrap some first."""
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.utils.other import get_pattern_key

        used = [k for k in _UNSUPPORTED_CONFIG if getattr(config, k, None)]
        if used:
            raise AdapterRejected(f"{path}: uses {', '.join(used)}, which the stacked LoRA kernel does not serve; "
                                  "start the server with `--lora-kernel peft`")
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            body = key.removeprefix(_PREFIX)
            for part in ("lora_A", "lora_B"):
                if body.endswith(f".{part}.weight"):
                    pairs.setdefault(body[: -len(f".{part}.weight")], {})[part] = tensor
                    break
            else:
                raise AdapterRejected(f"{path}: tensor `{key}` is not a LoRA A/B weight; the stacked LoRA kernel "
                                      "serves LoRA on linear layers only (`--lora-kernel peft` serves the rest)")
        if not pairs:
            raise AdapterRejected(f"{path}: the weights hold no LoRA tensors")
        parts, needs_wrap = [], False
        for mod_path, ab in sorted(pairs.items()):
            if set(ab) != {"lora_A", "lora_B"}:
                raise AdapterRejected(f"{path}: `{mod_path}` has {sorted(ab)} but needs lora_A and lora_B")
            try:
                module = model.get_submodule(mod_path)
            except AttributeError:
                raise AdapterRejected(f"{path}: the base model has no layer `{mod_path}`; was the adapter trained "
                                      "on another base model?") from None
            if isinstance(module, LoraLinear):
                base = module.base_layer
            elif isinstance(module, torch.nn.Linear):
                base, needs_wrap = module, True
            else:
                raise AdapterRejected(f"{path}: `{mod_path}` is a {type(module).__name__}; the stacked LoRA kernel "
                                      "serves LoRA on linear layers only (`--lora-kernel peft` serves the rest)")
            a, b = ab["lora_A"], ab["lora_B"]
            r, alpha = config.r, config.lora_alpha
            if config.rank_pattern:
                r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), mod_path), r)
            if config.alpha_pattern:
                alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), mod_path), alpha)
            if not base.weight.dtype.is_floating_point:
                raise AdapterRejected(f"{path}: `{mod_path}` is quantized ({base.weight.dtype}); the stacked LoRA "
                                      "kernel needs float weights (`--lora-kernel peft` serves quantized bases)")
            in_f, out_f = base.in_features, base.out_features
            if a.shape != (r, in_f) or b.shape != (out_f, r):
                raise AdapterRejected(f"{path}: `{mod_path}` has A {tuple(a.shape)} and B {tuple(b.shape)}, but rank "
                                      f"{r} on this base needs ({r}, {in_f}) and ({out_f}, {r}); was it trained on "
                                      "another base model?")
            scaling = alpha / math.sqrt(r) if config.use_rslora else alpha / r
            parts.append(_Part(mod_path, a, b, scaling))
        return parts, needs_wrap

    def add(self, model: Any, internal: str, parts: list[_Part], peft_scaling: dict[str, float] | None = None) -> None:
        """Copy ``parts`` into a free slot; ``peft_scaling`` (path -> PEFT's scaling) is cross-checked."""
        slot = next((s for s in range(1, self.capacity + 1) if s not in self.slots.values()), None)
        if slot is None:
            self._grow(max(4, 2 * self.capacity))
            slot = next(s for s in range(1, self.capacity + 1) if s not in self.slots.values())
        for part in parts:
            mod = model.get_submodule(part.path)  # the wrapped layer (PEFT may have wrapped it just now)
            if peft_scaling is not None and part.path in peft_scaling:
                assert math.isclose(peft_scaling[part.path], part.scaling), (part.path, peft_scaling[part.path])
            if not hasattr(mod, "_lp_A"):
                self._track(mod)
            r = part.a.shape[0]
            if r > mod._lp_A.shape[2]:
                self._widen(mod, r)
            with torch.no_grad():
                if r < mod._lp_A.shape[2]:  # a smaller rank leaves zeros in the rest of the slot
                    mod._lp_A[slot].zero_()
                    mod._lp_B[slot].zero_()
                mod._lp_A[slot, :, :r] = part.a.t()
                mod._lp_B[slot, :r] = part.b.t()
                mod._lp_B[slot, :r] *= part.scaling
        self.slots[internal] = slot

    def remove(self, internal: str) -> None:
        slot = self.slots.pop(internal, None)
        if slot is not None:
            for mod in self.layers:  # a stale slot must never leak into the next adapter placed there
                mod._lp_A[slot].zero_()
                mod._lp_B[slot].zero_()

    # ------------------------------------------------------------------ forward
    def set_rows(self, adapters: list[str]) -> None:
        """The runs of rows sharing an adapter in the next forward pass (base rows need nothing)."""
        segments: list[tuple[int, int, int]] = []
        for i, name in enumerate(adapters):
            if name == BASE_ADAPTER:
                continue
            slot = self.slots[name]
            if segments and segments[-1][0] == slot and segments[-1][2] == i:
                segments[-1] = (slot, segments[-1][1], i + 1)
            else:
                segments.append((slot, i, i + 1))
        self.segments = segments

    def views(self, module: Any, layer: int, proj: str) -> Any:
        """Per slot ``(A^T, (B*s)^T)`` of ``module``, or None if no adapter touches it (the fast path's
        :class:`lorapipe.decoding.llama.LoraRows`, with :attr:`segments`)."""
        return getattr(module, "_lp_views", None)

    def stacks(self, module: Any, layer: int, proj: str, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A^T [hi-lo, in, r], (B*s)^T [hi-lo, r, out])``: slots ``lo..hi-1`` of ``module``, or None if no adapter
        touches it (:class:`lorapipe.decoding.llama.StackedRows`: many runs in a pass take batched matmuls).
        The views are kept until the stacks are reallocated: a decode step asks for the same range again."""
        ranges = getattr(module, "_lp_ranges", None)
        if ranges is None:
            return None
        pair = ranges.get((lo, hi))
        if pair is None:
            pair = ranges[lo, hi] = (module._lp_A[lo:hi], module._lp_B[lo:hi])
        return pair

    # ------------------------------------------------------------------ storage
    def _track(self, mod: Any) -> None:
        weight = mod.base_layer.weight
        mod._lp_A = torch.zeros((self.capacity + 1, mod.in_features, 1), dtype=weight.dtype, device=weight.device)
        mod._lp_B = torch.zeros((self.capacity + 1, 1, mod.out_features), dtype=weight.dtype, device=weight.device)
        mod.forward = types.MethodType(_fast_forward(self), mod)
        self._views(mod)
        self.layers.append(mod)

    @staticmethod
    def _views(mod: Any) -> None:
        """Per-slot ``(A^T, (B*s)^T)`` views, built once per allocation: the forward pass only indexes a list."""
        mod._lp_views = [(mod._lp_A[s], mod._lp_B[s]) for s in range(mod._lp_A.shape[0])]
        mod._lp_ranges = {}  # (lo, hi) -> the stacks' views over those slots (see stacks)

    def _widen(self, mod: Any, r: int) -> None:
        a = mod._lp_A.new_zeros((mod._lp_A.shape[0], mod._lp_A.shape[1], r))
        b = mod._lp_B.new_zeros((mod._lp_B.shape[0], r, mod._lp_B.shape[2]))
        a[:, :, : mod._lp_A.shape[2]] = mod._lp_A
        b[:, : mod._lp_B.shape[1]] = mod._lp_B
        mod._lp_A, mod._lp_B = a, b
        self._views(mod)

    def _grow(self, capacity: int) -> None:
        for mod in self.layers:
            a = mod._lp_A.new_zeros((capacity + 1, *mod._lp_A.shape[1:]))
            b = mod._lp_B.new_zeros((capacity + 1, *mod._lp_B.shape[1:]))
            a[: mod._lp_A.shape[0]] = mod._lp_A
            b[: mod._lp_B.shape[0]] = mod._lp_B
            mod._lp_A, mod._lp_B = a, b
            self._views(mod)
        self.capacity = capacity
