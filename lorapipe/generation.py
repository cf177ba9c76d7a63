"""Batched chat generation with an in-process transformers model (with or without an adapter).

Llama-family models on CPU decode on lorapipe's fast path (:mod:`lorapipe.decoding`: bf16, fp16, fp32 or int8
base weights, LoRA exact on the side, continuous batching); other models, and adapters that path
does not compute (DoRA, ``modules_to_save``...), use ``model.generate``: prompts sorted by length
and generated in batches (left padding). Results come back in the caller's order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorapipe.decoding.grounded import Source

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # the answer's share of the wall time (rows decode together; see decoding.generate)


def copy_sources(cfg: Any, conversations: list[Messages]) -> list[Source] | None:
    """What each conversation's JSON values are copied from under ``inference.grounded``: its last user
    message (the input), with the value shapes ``task.output_schema`` gives; None when the config does
    not ask for grounded decoding."""
    if not cfg.inference.grounded:
        return None
    from lorapipe.decoding.grounded import Source, field_shapes

    shapes = field_shapes(cfg.task.output_schema)
    return [Source(next((m["content"] for m in reversed(c) if m["role"] == "user"), ""), shapes)
            for c in conversations]


def render_prompts(tokenizer, conversations: list[Messages]) -> list[str]:
    """Chat-template each conversation, ending with the assistant turn's opening."""
    return [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations]


def generate(model, tokenizer, conversations: list[Messages], *, max_new_tokens: int = 128,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8, seed: int | None = 0,
             stop: list[str] | None = None, progress: Callable[[int], None] | None = None,
             adapter_names: list[str] | None = None, fast: bool = True, weights: str = "auto",
             copy_from: list[Source] | None = None) -> list[Generation]:
    """Generate one answer per conversation. ``temperature == 0`` is greedy decoding.

    ``fast`` and ``weights`` are ``inference.fast`` and ``inference.weights`` (see the config).
    ``copy_from[i]`` (``inference.grounded``): the text conversation ``i``'s JSON string values must be
    copied from (:mod:`lorapipe.decoding.grounded`)."""
    import torch

    if not conversations:
        return []
    prompts = render_prompts(tokenizer, conversations)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if fast:
        from lorapipe.decoding import generate as fast_path

        reason = fast_path.why_not(model)
        if reason is None:
            return _generate_fast(model, tokenizer, encoded, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, batch_size=batch_size, seed=seed, stop=stop, progress=progress,
                                  adapter_names=adapter_names, weights=weights, copy_from=copy_from)
        log.info("generating with transformers' generate: %s", reason)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id,
                                  "eos_token_id": tokenizer.eos_token_id}
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: every prompt ends at the same column
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            if seed is not None:
                torch.manual_seed(seed + start)
            extra: dict[str, Any] = {}
            if copy_from is not None:
                from transformers import LogitsProcessorList

                from lorapipe.decoding.grounded import GroundedLogits, vocabulary

                extra["logits_processor"] = LogitsProcessorList(
                    [GroundedLogits([copy_from[i] for i in idx], vocabulary(tokenizer), width)])
            if adapter_names is not None:
                extra["adapter_names"] = [adapter_names[i] for i in idx]
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs,
                                     **extra)
            dt = time.perf_counter() - t0
            for row, i in enumerate(idx):
                new = out[row, width:].tolist()
                if tokenizer.eos_token_id in new:
                    new = new[:new.index(tokenizer.eos_token_id)]
                while new and new[-1] == pad_id:
                    new.pop()
                text = tokenizer.decode(new, skip_special_tokens=True)
                for s in stop or []:
                    if s in text:
                        text = text[:text.index(s)]
                results[i] = Generation(text.strip(), len(encoded[i]), len(new), dt / len(idx))
            if progress:
                progress(len(idx))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _generate_fast(model, tokenizer, encoded: list[list[int]], *, weights: str, **kwargs: Any) -> list[Generation]:
    from lorapipe.decoding import generate as fast_path

    was_training = model.training
    model.eval()
    try:
        out = fast_path.generate(model, tokenizer, encoded, weights=weights, **kwargs)
    finally:
        model.train(was_training)
    return [Generation(text.strip(), len(ids), n, seconds)
            for (text, n, seconds), ids in zip(out, encoded, strict=True)]
