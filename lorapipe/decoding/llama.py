"""A lean forward pass for Llama-family models on CPU: what serve, predict, probe and the A/B decode with.

transformers' forward is general (any cache, any attention kernel, hooks, output objects); for a
135M model on a CPU that generality costs as much as the maths. Decoding here uses the HF model's
own tensors and rotary embedding, with:

* the frozen base linears in half the bytes: ``weights="bf16"`` (oneDNN's bf16 GEMM on the CPU's
  matrix units, AMX: inputs rounded to bf16, fp32 accumulation, for passes of 8 rows or more, prefill
  included; fewer rows take the fp16 kernel, faster there) or ``weights="fp16"`` (fbgemm's fp16-weight
  GEMM, fp32 activations and accumulation; prefill, many tokens at once and compute-bound, runs the
  original fp32 weights), or a quarter (``weights="int8"``: fbgemm's int8 GEMM, weights quantized
  per output channel, activations per pass, fp32 out); ``auto`` (the default) is bf16 where the CPU
  has AMX, else fp16; q/k/v and gate/up fused into one matmul each; the residual stream, norms,
  attention, the KV cache and the logits stay fp32;
* the KV cache of :mod:`lorapipe.decoding.kv` (a decode step writes its column in place);
* LoRA deltas in fp32 on the side, exactly as PEFT computes them: ``x @ A^T @ (B * scaling)^T``
  per run of rows sharing an adapter (:class:`LoraRows`), so many adapters share one batch; with
  many runs and the server's stacked adapters, two batched matmuls serve them all (:class:`_Grouped`).

The call matches :data:`lorapipe.decoding.batch.Forward` plus the LoRA rows.
:func:`unsupported` says why a model cannot take this path (the caller then uses transformers').
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from lorapipe.decoding.kv import KVCache, KVLayer

WEIGHTS = ("auto", "bf16", "fp16", "fp32", "int8")  # auto: see resolve_weights
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PREFILL_ROWS = 32  # from this many tokens per pass the fp32 GEMM is as fast, and exact
_BF16_ROWS = 8  # bf16 mode: from this many rows per pass the bf16 GEMM beats fbgemm's fp16 one (30 layers, AMX:
# 19.8 vs 21.3 ms at 8 rows, 19.5 vs 27.8 at 16); below, it is up to 1.5x slower, so those passes take fp16
_GROUPED_RUNS = 3  # from this many adapter runs in a pass, stacked adapters take batched matmuls (see _Grouped)


class LoraRows(Protocol):
    """Which rows of a pass take which adapter, and each adapted layer's weights."""

    segments: Sequence[tuple[Any, int, int]]  # (adapter key, first row, end row); rows without one: base

    def views(self, module: torch.nn.Module, layer: int, proj: str) -> Any:
        """``views[key] -> (A^T [in, r], (B * scaling)^T [r, out])`` for ``module``, or None if not adapted."""


class StackedRows(LoraRows, Protocol):
    """LoRA rows whose adapters sit in slots of per-layer stacks (the server's): keys are slot numbers."""

    def stacks(self, module: torch.nn.Module, layer: int, proj: str, lo: int,
               hi: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A^T [hi-lo, in, r], (B * scaling)^T [hi-lo, r, out])`` of slots ``lo..hi-1`` for ``module``, or None
        if not adapted."""


@dataclass
class _Grouped:
    """A pass's rows gathered per adapter slot, so each projection takes two batched matmuls for all adapters.

    Slots ``lo..hi-1`` each get ``width`` token rows (a slot with fewer, or none, is padded with a zero
    row, whose delta is zero): ``x[src]`` viewed ``[hi-lo, width, in]``, then ``bmm`` with the slots' A^T
    and (B*s)^T, and the result added back at ``dst``. ``src`` is None when the rows already are in that
    order (every row adapted, equal runs): then ``x`` and the output are only viewed."""

    lo: int
    hi: int
    width: int
    src: torch.Tensor | None
    dst: torch.Tensor | None

    @classmethod
    def of(cls, segments: Sequence[tuple[Any, int, int]], tokens: int, rows: int) -> _Grouped:
        per: dict[int, list[int]] = {}
        for slot, start, end in segments:
            per.setdefault(slot, []).extend(range(start * tokens, end * tokens))
        lo, hi = min(per), max(per) + 1
        width = max(len(r) for r in per.values())
        pad = rows * tokens  # the index of the zero row appended to x
        src = [pad] * ((hi - lo) * width)
        for slot, found in per.items():
            src[(slot - lo) * width:(slot - lo) * width + len(found)] = found
        if src == list(range(pad)):
            return cls(lo, hi, width, None, None)
        index = torch.tensor(src)
        return cls(lo, hi, width, index, index.masked_fill(index == pad, 0))

    def add(self, x: torch.Tensor, outs: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """``out += delta`` for each ``(out, (A^T, (B*s)^T))``, the stacks' views over slots ``lo..hi-1``."""
        n = self.hi - self.lo
        if self.src is None:
            xs = x.view(n, self.width, -1)
        else:
            xs = torch.cat([x, x.new_zeros((1, x.shape[1]))]).index_select(0, self.src).view(n, self.width, -1)
        for out, (a_t, b_t) in outs:
            low = torch.bmm(xs, a_t)  # [slots, width, r]
            if self.dst is None and out.is_contiguous():
                out.view(n, self.width, -1).baddbmm_(low, b_t)
            elif self.dst is None:  # a column slice of q/k/v or gate/up: in-place baddbmm would copy it
                out.view(n, self.width, -1).add_(torch.bmm(low, b_t))
            else:
                out.index_add_(0, self.dst, torch.bmm(low, b_t).view(n * self.width, -1))


@dataclass
class PeftRows:
    """LoRA rows read from a PEFT model's own adapters (generation: one adapter, or none, per row)."""

    segments: list[tuple[Any, int, int]] = field(default_factory=list)
    table: dict[tuple[int, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def views(self, module: torch.nn.Module, layer: int, proj: str) -> Any:
        return self.table.get((layer, proj))


def unsupported(model: Any) -> str | None:
    """Why ``model`` cannot use the fast path (None when it can)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return f"the fast path serves Llama-architecture models, not `{getattr(cfg, 'model_type', type(model))}`"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "linear biases are not supported by the fast path"
    if getattr(cfg, "hidden_act", "silu") != "silu" or (getattr(cfg, "pretraining_tp", 1) or 1) != 1:
        return "only SiLU MLPs without tensor-parallel slicing are supported by the fast path"
    if next(model.parameters()).device.type != "cpu":
        return "the fast path runs on CPU; other devices use transformers' forward"
    if next(model.parameters()).dtype != torch.float32:
        return "the fast path expects fp32 weights"
    return None


def resolve_weights(weights: str) -> str:
    """The weight mode ``weights`` names: ``auto`` is bf16 on a CPU whose matrix units take bf16 (AMX: the
    GEMMs run 3-4x faster than fp32 at prefill sizes), else fp16 (bf16 without AMX is slower than fp32)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights != "auto":
        return weights
    from lorapipe.models import cpu_has_amx

    return "bf16" if cpu_has_amx() else "fp16"


def base_weight(module: torch.nn.Module) -> torch.Tensor:
    """The frozen weight of a linear layer, whether or not PEFT wrapped it."""
    return getattr(module, "base_layer", module).weight


def _pack(weights: list[torch.Tensor], mode: str) -> Any:
    w = torch.cat(weights).contiguous()
    if mode == "bf16":
        return w.to(torch.bfloat16)
    if mode == "fp16":
        return torch.ops.quantized.linear_prepack_fp16(w, None)
    import warnings

    scales = (w.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; fbgemm's kernels are not
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(w, scales, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None)


class _Linear:
    """Some linears of one input, fused: returns their outputs as views of one ``[tokens, sum(out)]``."""

    def __init__(self, weights: list[torch.Tensor], mode: str):
        self.weights = weights  # the model's own fp32 tensors (no copy)
        self.splits = [w.shape[0] for w in weights]
        self.mode = mode
        self.packed = _pack(weights, mode) if mode != "fp32" else None
        self.small = _pack(weights, "fp16") if mode == "bf16" else None  # bf16's passes of few rows

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.mode == "bf16" and x.shape[0] >= _BF16_ROWS:
            # each part converted on its own: contiguous outputs, which LoRA's batched matmuls add into in place
            return [part.float() for part in F.linear(x.to(torch.bfloat16), self.packed).split(self.splits, dim=1)]
        if self.packed is not None and x.shape[0] < _PREFILL_ROWS:
            if self.mode in ("fp16", "bf16"):
                out = torch.ops.quantized.linear_dynamic_fp16(x, self.small if self.mode == "bf16" else self.packed)
            else:  # activations take 7 bits (reduce_range), as PyTorch's dynamic quantization does on x86
                out = torch.ops.quantized.linear_dynamic(x, self.packed, True)
        else:
            return [F.linear(x, w) for w in self.weights]
        return list(out.split(self.splits, dim=1)) if len(self.splits) > 1 else [out]


class FastLlama:
    """The decode path for one HF Llama model (see the module docstring)."""

    def __init__(self, model: Any, weights: str = "auto"):
        weights = resolve_weights(weights)
        reason = unsupported(model)
        if reason:
            raise ValueError(reason)
        self.model, self.weights = model, weights
        cfg, inner = model.config, model.model
        self.hq, self.hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.hq
        self.blocks = list(inner.layers)
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        # the head's outputs are the logits: bf16 would round them to 3 digits (near ties flip), so the head
        # takes fp16 weights with fp32 outputs (it only runs on each row's last position)
        self.head = _Linear([base_weight(model.lm_head)], "fp16" if weights == "bf16" else weights)
        self.linears = []
        for block in self.blocks:
            att, mlp = block.self_attn, block.mlp
            self.linears.append({
                "qkv": _Linear([base_weight(att.q_proj), base_weight(att.k_proj), base_weight(att.v_proj)], weights),
                "o": _Linear([base_weight(att.o_proj)], weights),
                "gate_up": _Linear([base_weight(mlp.gate_proj), base_weight(mlp.up_proj)], weights),
                "down": _Linear([base_weight(mlp.down_proj)], weights),
            })
        self.stamp = self.current_stamp()

    def _first_adapted(self, lora: LoraRows) -> int:
        """The first layer where ``lora`` has weights for some projection (the layer count if none)."""
        for i, block in enumerate(self.blocks):
            att, mlp = block.self_attn, block.mlp
            mods = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            if any(lora.views(m, i, proj) is not None for m, proj in zip(mods, PROJ, strict=True)):
                return i
        return len(self.blocks)

    def current_stamp(self) -> tuple[int, ...]:
        """Identity of the base weights read at build time: a rebuilt or modified tensor changes it."""
        ws = [w for lin in self.linears for part in lin.values() for w in part.weights] + self.head.weights
        return tuple(x for w in ws for x in (w.data_ptr(), w._version))

    # ------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: KVCache | None,
                 lora: LoraRows | None = None, *, pick: torch.Tensor | None = None,
                 copies: int = 1) -> tuple[torch.Tensor, KVCache | None]:
        """Logits of each row's last position ``[rows, vocab]`` (fp32) and the cache with the new tokens.

        ``ids``/``pos``: ``[rows, new]``; ``mask``: ``[rows, cached + new]`` (0 = padding). With ``pick``
        (a bool ``[rows, new]``) and no cache, the logits of the picked positions instead, ``[picked,
        vocab]``, from the head's fp32 weights, and no cache is kept (what a loss reads:
        :func:`lorapipe.decoding.generate.token_nll`). There, ``copies > 1`` scores the rows that many
        times, copy ``k`` being rows ``k*rows..`` of ``lora.segments`` and of the logits; the layers below
        the first one LoRA adapts run once for all copies (the demo adapts the upper half)."""
        scoring = pick is not None and cache is None
        if copies > 1 and not scoring:
            raise ValueError("copies > 1 is for scoring (pick, no cache)")
        b, s = ids.shape
        hq, hkv, d = self.hq, self.hkv, self.head_dim
        x = F.embedding(ids, self.embed).view(b * s, -1)
        cos, sin = self.rotary(x, pos)  # [rows, new, d]
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        keep = mask.bool()
        if s == 1:  # additive mask over the cached columns, shared by every layer
            att_mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill_(~keep, -math.inf)[:, None, None, :]
        else:  # causal + padding; a query always sees itself, so padded queries never get all -inf
            t = keep.shape[1]
            cols = torch.arange(t)
            rows = torch.arange(t - s, t)
            causal = cols[None, :] <= rows[:, None]
            att_mask = (causal[None] & keep[:, None, :]) | (cols[None, :] == rows[:, None])[None]
            att_mask = att_mask[:, None]
        if cache is None and not scoring:
            cache = KVCache([KVLayer(x.new_empty((b, hkv, 0, d)), x.new_empty((b, hkv, 0, d)))
                             for _ in self.blocks])
        segments = list(lora.segments) if lora is not None else []
        grouped = None
        if len(segments) >= _GROUPED_RUNS and hasattr(lora, "stacks"):
            grouped = _Grouped.of(segments, s, b * copies)
        fork = self._first_adapted(lora) if copies > 1 and segments else len(self.blocks)
        for i, (block, lin) in enumerate(zip(self.blocks, self.linears, strict=True)):
            if i == fork:  # the copies part here: each gets its own rows from the first adapted layer on
                x, b = x.repeat(copies, 1), b * copies
                cos, sin, att_mask = cos.repeat(copies, 1, 1, 1), sin.repeat(copies, 1, 1, 1), att_mask.repeat(
                    copies, 1, 1, 1)
            att, mlp = block.self_attn, block.mlp
            h = _norm(x, block.input_layernorm)
            q, k, v = lin["qkv"](h)
            if segments:
                _add_lora(h, (q, k, v), (att.q_proj, att.k_proj, att.v_proj), ("q_proj", "k_proj", "v_proj"),
                          i, lora, segments, s, grouped)
            qk = torch.cat([q, k], dim=1).view(b, s, hq + hkv, d)
            qk = qk * cos + _rotate_half(qk) * sin
            q = qk[:, :, :hq].transpose(1, 2)
            keys, values = qk[:, :, hq:].transpose(1, 2), v.view(b, s, hkv, d).transpose(1, 2)
            if cache is not None:
                keys, values = cache.layers[i].append(keys, values)
            if s == 1:
                scores = torch.matmul(q.reshape(b, hkv, hq // hkv, d), keys.transpose(2, 3))
                scores = torch.softmax(scores.mul_(d ** -0.5).add_(att_mask), dim=-1)
                o = torch.matmul(scores, values).view(b, hq * d)
            else:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=att_mask, enable_gqa=True)
                o = o.transpose(1, 2).reshape(b * s, hq * d)
            (a,) = lin["o"](o)
            if segments:
                _add_lora(o, (a,), (att.o_proj,), ("o_proj",), i, lora, segments, s, grouped)
            x = x + a
            h = _norm(x, block.post_attention_layernorm)
            g, u = lin["gate_up"](h)
            if segments:
                _add_lora(h, (g, u), (mlp.gate_proj, mlp.up_proj), ("gate_proj", "up_proj"),
                          i, lora, segments, s, grouped)
            m = F.silu(g) * u
            (dn,) = lin["down"](m)
            if segments:
                _add_lora(m, (dn,), (mlp.down_proj,), ("down_proj",), i, lora, segments, s, grouped)
            x = x + dn
        if scoring:
            if fork == len(self.blocks) and copies > 1:
                x = x.repeat(copies, 1)
            return F.linear(_norm(x[pick.reshape(-1).repeat(copies)], self.norm), self.head.weights[0]), None
        last = _norm(x.view(b, s, -1)[:, -1], self.norm)
        (logits,) = self.head(last)
        return logits.float(), cache


def _norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """LlamaRMSNorm in one fused op (same formula: x * rsqrt(mean(x^2) + eps) * weight, in fp32)."""
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _add_lora(x: torch.Tensor, outs: tuple[torch.Tensor, ...], modules: tuple[Any, ...], names: tuple[str, ...],
              layer: int, lora: Any, segments: list[tuple[Any, int, int]], tokens: int,
              grouped: _Grouped | None = None) -> None:
    """out[rows of a] += (x[rows of a] @ A^T) @ (B * scaling)^T for each adapter run, in place.

    The projections in ``outs`` share the input ``x`` (q/k/v, gate/up): each run's rows are cut once.
    With ``grouped`` (many runs, stacked adapters) every run is served by the same two batched matmuls."""
    if grouped is not None:
        stacked = [(out, pair) for out, module, name in zip(outs, modules, names, strict=True)
                   if (pair := lora.stacks(module, layer, name, grouped.lo, grouped.hi)) is not None]
        if stacked:
            grouped.add(x, stacked)
        return
    tables = [(out, views) for out, module, name in zip(outs, modules, names, strict=True)
              if (views := lora.views(module, layer, name)) is not None]
    if not tables:
        return
    for key, start, end in segments:
        rows = slice(start * tokens, end * tokens)
        xs = x[rows]
        for out, views in tables:
            pair = views.get(key) if isinstance(views, dict) else views[key]
            if pair is not None:
                out[rows].addmm_(torch.mm(xs, pair[0]), pair[1])


def runs(adapters: list[str], base: str) -> list[tuple[Any, int, int]]:
    """The runs of consecutive rows sharing an adapter: ``(name, first row, end row)``; ``base`` rows are left out."""
    segments: list[tuple[Any, int, int]] = []
    for i, name in enumerate(adapters):
        if name == base:
            continue
        if segments and segments[-1][0] == name and segments[-1][2] == i:
            segments[-1] = (name, segments[-1][1], i + 1)
        else:
            segments.append((name, i, i + 1))
    return segments


def peft_table(model: Any) -> tuple[PeftRows, str | None] | str:
    """The LoRA weights of a PEFT-wrapped model, and the adapter its rows take now (None: adapters disabled).

    Returns a reason string when the adapters use something this path does not compute exactly
    (DoRA, LoRA biases, merged weights, LoRA outside the seven projections, several active adapters...)."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    table: dict[tuple[int, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    disabled = False
    active: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            if type(module).__name__ in ("ModulesToSaveWrapper", "TrainableTokensWrapper"):
                return f"`{name}` is trained in full (modules_to_save), which the fast path does not compute"
            continue
        leaf = name.rsplit(".", 1)[-1]
        found = re.search(r"\.layers\.(\d+)\.", name)
        if not isinstance(module, LoraLinear) or leaf not in PROJ or found is None:
            return f"`{name}` carries LoRA on a layer the fast path does not adapt"
        if getattr(module, "merged", False):
            return f"`{name}` has an adapter merged into its weights"
        disabled = disabled or module.disable_adapters
        active = list(module.active_adapters)
        entry: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for adapter in module.lora_A:
            if module.use_dora.get(adapter) or getattr(module, "lora_bias", {}).get(adapter):
                return f"`{name}` uses DoRA or a LoRA bias, which the fast path does not compute"
            a = module.lora_A[adapter].weight.detach()
            b = module.lora_B[adapter].weight.detach() * module.scaling[adapter]
            entry[adapter] = (a.t(), b.t().contiguous())
        table[(int(found.group(1)), leaf)] = entry
    if len(active) > 1:
        return f"{len(active)} adapters active at once"
    return PeftRows([], table), (None if disabled or not active else active[0])
