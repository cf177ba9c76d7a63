"""Calling a teacher or judge: requests with the config's sampling settings, calls that return failures
instead of raising, and the client's identity and spending for a stage's record. Used by the data
stages, the probe and the evaluation alike."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from lorapipe.errors import TeacherError
from lorapipe.llm.base import ChatRequest, Completion

Tick = Callable[[int], None]


def request(llm_cfg: Any, messages: list[dict[str, str]], sample_index: int = 0, **overrides: Any) -> ChatRequest:
    """A request with the sampling settings of an ``LLMConfig`` (or neutral defaults without one)."""
    fields: dict[str, Any] = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 256}
    if llm_cfg is not None:
        fields.update(temperature=llm_cfg.temperature, top_p=llm_cfg.top_p, max_tokens=llm_cfg.max_tokens)
    fields.update(overrides)
    return ChatRequest(messages=messages, sample_index=sample_index, **fields)


def batch_size_for(llm_cfg: Any) -> int:
    """How many requests go to the LLM between journal writes: enough to keep it busy, few enough
    that a crash costs little (answers in flight are in the client's own cache anyway)."""
    if llm_cfg is None:
        return 16
    if llm_cfg.kind == "openai":
        return max(4, 4 * llm_cfg.concurrency)
    if llm_cfg.kind == "local":
        return max(1, 2 * llm_cfg.batch_size)
    return 16


def call(llm: Any, requests: list[ChatRequest], tick: Tick | None = None) -> list[Completion]:
    """``llm.complete`` that returns failures as ``Completion.error`` instead of raising (when the
    client supports ``raise_on_error``), and advances ``tick`` once per request even when the client
    reports no progress itself."""
    if not requests:
        return []
    seen = [0]

    def counted(n: int) -> None:
        seen[0] += n
        if tick:
            tick(n)

    kwargs: dict[str, Any] = {}
    try:
        if "raise_on_error" in inspect.signature(llm.complete).parameters:
            kwargs["raise_on_error"] = False
    except (TypeError, ValueError):
        pass
    out = llm.complete(requests, progress=counted, **kwargs)
    if len(out) != len(requests):
        raise TeacherError(f"{_who(llm)} returned {len(out)} answers for {len(requests)} requests; a client "
                           "must answer every request in order")
    if tick and seen[0] < len(requests):
        tick(len(requests) - seen[0])
    return out


def _who(llm: Any) -> str:
    try:
        ident = llm.identity()
        return f"{ident.get('kind', '?')} model {ident.get('model') or ident.get('function') or ''}".strip()
    except Exception:  # noqa: BLE001  (only used to word an error message)
        return type(llm).__name__


def identity_of(llm: Any) -> dict[str, Any] | None:
    if llm is None:
        return None
    try:
        return dict(llm.identity())
    except Exception:  # noqa: BLE001  (an identity is for the record only; never fail a stage over it)
        return {"kind": type(llm).__name__}


USAGE_FIELDS = ("calls", "cached", "failed", "prompt_tokens", "completion_tokens", "cost")


def usage_of(llm: Any) -> dict[str, Any] | None:
    """``llm.usage.as_dict()``, or its counters read directly when ``as_dict`` fails."""
    usage = getattr(llm, "usage", None)
    if usage is None:
        return None
    try:
        return dict(usage.as_dict())
    except Exception:  # noqa: BLE001  (e.g. dataclasses.asdict() deep-copying Usage's lock)
        return {k: getattr(usage, k) for k in USAGE_FIELDS if hasattr(usage, k)}


def usage_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a client spent between two :func:`usage_of` snapshots (a client may serve several stages)."""
    if after is None:
        return None
    before = before or {}
    return {k: (round(v - (before.get(k) or 0), 6) if isinstance(v, (int, float)) else v) for k, v in after.items()}
