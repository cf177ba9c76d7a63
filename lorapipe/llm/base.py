"""The one protocol every teacher and judge speaks.

A client takes a list of chat requests and returns one :class:`Completion` per request, in order.
Taking the whole list at once lets an endpoint client run requests concurrently and a local model
batch them; stages never care which. ``usage`` sums tokens (and cost) over the client's life.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

Messages = list[dict[str, str]]
Progress = Callable[[int], None]  # called with the number of requests just finished


@dataclass(frozen=True)
class ChatRequest:
    messages: Messages
    temperature: float = 0.7
    max_tokens: int = 256
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    sample_index: int = 0  # distinguishes N samples of the same prompt (and keys the cache)
    # What the stage asks for, e.g. {"step": "edge_case", "category": "adversarial", "variant":
    # "prompt_injection", "index": 3}: a `python` teacher gets it as the `purpose` keyword, so a
    # function can answer without parsing the prompt; endpoints never see it. It is derived from the
    # messages, so it is left out of equality and of the cache key.
    purpose: dict[str, Any] | None = field(default=None, compare=False)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
                "stop": list(self.stop), "sample_index": self.sample_index}

    @classmethod
    def from_config(cls, cfg: Any, messages: Messages, *, sample_index: int = 0, **overrides: Any) -> ChatRequest:
        """A request with the sampling settings of an ``LLMConfig`` (``overrides`` win)."""
        sampling: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
        sampling.update(overrides)
        if "stop" in sampling:
            sampling["stop"] = tuple(sampling["stop"] or ())
        return cls(messages=messages, sample_index=sample_index, **sampling)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None  # set when the request failed for good and the caller asked not to raise
    finish_reason: str | None = None  # "stop", "length", ... as the endpoint reported it (None if unknown)


@dataclass
class Usage:
    calls: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, c: Completion, prices: Any = None) -> None:
        with self._lock:
            if c.cached:
                self.cached += 1
                return
            if c.error:
                self.failed += 1
                return
            self.calls += 1
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens
            if prices is not None:
                self.cost += (c.prompt_tokens * prices.input_per_1k + c.completion_tokens * prices.output_per_1k) / 1000

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field, and a lock cannot be copied.
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@runtime_checkable
class LLM(Protocol):
    usage: Usage

    def identity(self) -> dict[str, Any]:
        """What identifies the model (kind, model name, endpoint); recorded in manifests."""
        ...

    def complete(self, requests: list[ChatRequest], progress: Progress | None = None) -> list[Completion]:
        """Answer every request, in order."""
        ...
