"""Batch generation on the fast path: what predict, the probe, the A/B and the local teacher run.

The prompts go through the serving decode loop (:mod:`lorapipe.decoding.batch`): up to
``batch_size`` rows decode together, a finished row leaves the batch at once and the next prompt
takes its place (continuous batching), so a batch never idles on its longest answer as
``model.generate`` does. Row ``i`` samples with seed ``seed + i``, so an answer does not depend on
which rows it happened to share a batch with (greedy rows are plain argmax).

:func:`fast_model` keeps one :class:`~lorapipe.decoding.llama.FastLlama` per model and weight mode
on the model object, rebuilt if its base weights changed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lorapipe.decoding.batch import BASE_ADAPTER as BASE
from lorapipe.decoding.batch import Batch, PrefixKV, Row, SamplingParams, TextStream, common_prefix, prefill
from lorapipe.decoding.llama import FastLlama, PeftRows, peft_table, resolve_weights, runs, unsupported

if TYPE_CHECKING:
    from lorapipe.decoding.grounded import Source

log = logging.getLogger(__name__)

_ATTR = "_lorapipe_fast"


def fast_model(model: Any, weights: str) -> FastLlama:
    """The fast path of ``model`` (a plain HF model) in ``weights`` mode, built once and kept on the model."""
    weights = resolve_weights(weights)
    kept: dict[str, FastLlama] = model.__dict__.setdefault(_ATTR, {})
    fast = kept.get(weights)
    if fast is None or fast.stamp != fast.current_stamp():
        fast = kept[weights] = FastLlama(model, weights)
    return fast


def why_not(model: Any) -> str | None:
    """Why :func:`generate` cannot run ``model`` (a plain or PEFT-wrapped HF model); None when it can."""
    reason = unsupported(_base(model))
    if reason is None and _has_lora(model):
        table = peft_table(model)
        reason = table if isinstance(table, str) else None
    return reason


def _split(model: Any) -> tuple[Any, PeftRows | None, str | None]:
    """``(plain HF model, its LoRA rows or None, the active adapter or None)`` of a plain or PEFT model."""
    if not _has_lora(model):  # else: a PeftModel, or a model PEFT injected adapters into
        return model, None, None
    found = peft_table(model)
    assert not isinstance(found, str), found
    return _base(model), *found


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _has_lora(model: Any) -> bool:
    from peft.tuners.lora.layer import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new_tokens: int, temperature: float,
             top_p: float, seed: int | None, stop: list[str] | None, batch_size: int, weights: str,
             adapter_names: list[str] | None = None, copy_from: list[Source] | None = None,
             progress: Callable[[int], None] | None = None) -> list[tuple[str, int, float]]:
    """``(text, completion tokens, seconds)`` per prompt (token ids), in order. Check :func:`why_not` first.

    A row's seconds are its share of the work: its own prefill, and each decode step's time divided
    among the rows in that step, so a long answer costs more than a short one decoded beside it.

    ``adapter_names[i]`` (a PEFT adapter name, or ``"__base__"``) picks row ``i``'s adapter; by default
    every row takes the PEFT model's active adapter, or none under ``disable_adapter()``. ``copy_from[i]``:
    row ``i``'s JSON string values must be pieces of that text (:mod:`lorapipe.decoding.grounded`)."""
    base, lora, active = _split(model)
    default = active or BASE
    fast = fast_model(base, weights)

    def forward(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any,
                adapters: list[str]) -> tuple[torch.Tensor, Any]:
        if lora is not None:
            lora.segments = runs(adapters, BASE)
        return fast(ids, mask, pos, cache, lora if lora is not None and lora.segments else None)

    texts: list[list[str]] = [[] for _ in prompts]

    def sink(i: int) -> Callable[[str, str | None], None]:
        def put(delta: str, finish: str | None) -> None:
            texts[i].append(delta)
            if finish is not None and progress is not None:
                progress(1)
        return put

    vocab = None
    if copy_from is not None:
        from lorapipe.decoding.grounded import vocabulary

        vocab = vocabulary(tokenizer)
    rows = [Row(p, adapter_names[i] if adapter_names is not None else default,
                SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               stop=tuple(stop or ()), seed=None if seed is None else seed + i,
                               copy_from=copy_from[i] if copy_from is not None else None), sink(i), vocab=vocab)
            for i, p in enumerate(prompts)]
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    stream = TextStream(tokenizer, eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # longest first, as transformers' path does: similar lengths share a prefill, and the last
    # rows to join (the shortest prompts) add the least padding to a running batch
    pending = deque(sorted(rows, key=lambda r: -len(r.prompt)))
    batch: Batch | None = None
    spent = {id(r): 0.0 for r in rows}
    with torch.inference_mode():
        shared = _shared_prefix(forward, rows)
        # rows join in groups of a quarter batch: each merge copies the running batch's whole KV cache
        # once, so one join per free place cost a third of the A/B (when drops copied it too)
        group = max(1, batch_size // 4)
        while pending or (batch is not None and len(batch)):
            running = len(batch) if batch is not None else 0
            room = batch_size - running
            t0 = time.perf_counter()
            if pending and (room >= min(group, len(pending)) or running == 0):
                joining: Batch | None = None
                for chunk in _chunks([pending.popleft() for _ in range(min(room, len(pending)))]):
                    joining = _joined(joining, prefill(forward, chunk, stream, pad_id, shared.get(chunk[0].adapter)))
                    for row in chunk:
                        spent[id(row)] += (time.perf_counter() - t0) / len(chunk)
                    t0 = time.perf_counter()
                batch = _joined(batch, joining)
            else:
                assert batch is not None
                stepping = list(batch.rows)
                batch.step(forward, stream)
                for row in stepping:
                    spent[id(row)] += (time.perf_counter() - t0) / len(stepping)
    return [("".join(t), len(r.tokens), spent[id(r)]) for t, r in zip(texts, rows, strict=True)]


def token_nll(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, *, weights: str,
              adapters: list[str | None] | None = None) -> list[tuple[float, int]]:
    """Summed negative log-likelihood of the ``labels`` that are not -100, and their number, per adapter:
    token ``t`` predicts label ``t + 1``, as transformers' causal-LM loss counts. ``ids``/``mask``/``labels``:
    ``[rows, tokens]``, any padding the mask marks. ``adapters``: PEFT adapter names, None for the base
    (default: the model as it is, its active adapter or none under ``disable_adapter()``); their rows share
    the layers below the first adapted one. Only the scored positions go through the (fp32) head. Check
    :func:`why_not` first."""
    import torch.nn.functional as F

    base, lora, active = _split(model)
    adapters = [active] if adapters is None else adapters
    b = ids.shape[0]
    if lora is not None:
        lora.segments = [(name, k * b, (k + 1) * b) for k, name in enumerate(adapters) if name is not None]
    target = labels[:, 1:]
    pick = torch.zeros(labels.shape, dtype=torch.bool)
    pick[:, :-1] = target != -100
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits, _ = fast_model(base, weights)(ids, mask, pos, None, lora if lora is not None and lora.segments
                                              else None, pick=pick, copies=len(adapters))
        n = int(pick.sum())
        wanted = target[target != -100]
        return [(float(F.cross_entropy(logits[k * n:(k + 1) * n], wanted, reduction="sum")), n)
                for k in range(len(adapters))]


def _joined(batch: Batch | None, fresh: Batch | None) -> Batch | None:
    """``fresh``'s rows added to ``batch`` (either may be None or empty: rows that finished at once)."""
    if batch is None or not len(batch):
        return fresh
    if fresh is not None and len(fresh):
        batch.merge(fresh)
    return batch


def _chunks(rows: list[Row], most: int = 8, spread: float = 0.1) -> list[list[Row]]:
    """``rows`` (longest prompt first) cut into prefill passes: one adapter each, at most ``most`` rows, and
    prompts within ``spread`` of the pass's longest. Padding costs compute, so prompts of different lengths
    prefill apart; a pass of several prompts shares each layer's per-call cost (a pass of 4 prompts of ~150
    tokens takes ~30 % less than 4 passes on the demo's A/B, bf16)."""
    out: list[list[Row]] = []
    for adapter in dict.fromkeys(r.adapter for r in rows):
        for row in (r for r in rows if r.adapter == adapter):
            last = out[-1] if out and out[-1][0].adapter == adapter else None
            if last is not None and len(last) < most and len(row.prompt) >= (1 - spread) * len(last[0].prompt):
                last.append(row)
            else:
                out.append([row])
    return out


def _shared_prefix(forward: Any, rows: list[Row], min_tokens: int = 16) -> dict[str, tuple[PrefixKV, int]]:
    """The KV of the prompt prefix every row shares (the task's system prompt), computed once per adapter.

    Every row then prefills only its own tokens after it: on the demo's A/B that is about half of
    each prompt, and the padding between prompts of different lengths shrinks with it."""
    if len(rows) < 2:
        return {}
    first = rows[0].prompt
    n = min(min(common_prefix(first, r.prompt) for r in rows[1:]), min(len(r.prompt) for r in rows) - 1)
    if n < min_tokens:
        return {}
    ids = torch.tensor([first[:n]], dtype=torch.long)
    out = {}
    for adapter in dict.fromkeys(r.adapter for r in rows):
        _, cache = forward(ids, torch.ones_like(ids), torch.arange(n)[None, :], None, [adapter])
        out[adapter] = PrefixKV(list(first[:n]), cache), n
    return out
