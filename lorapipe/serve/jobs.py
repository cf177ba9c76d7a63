"""What a request holds while it runs: a lease on one adapter version, its job (rows), its result.

The engine hands these out (:meth:`lorapipe.serve.engine.Engine.acquire` and ``submit``); a lease is
released exactly once, when the job's last row ends, however it ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from lorapipe.decoding.batch import Row
from lorapipe.serve.adapters import BASE_ADAPTER


class LeaseOwner(Protocol):
    """What a lease needs from the engine that gave it out."""

    base_version: str

    def _release(self, lease: Lease) -> None: ...


@dataclass
class Slot:
    """One loaded adapter version."""

    name: str
    internal: str  # the PEFT adapter name inside the model
    version: str
    token: str
    refs: int = 0
    retired: bool = False


@dataclass
class Lease:
    """A request's hold on one adapter version (or on the base when ``slot`` is None)."""

    model: str  # the public name asked for
    slot: Slot | None
    engine: LeaseOwner
    _released: bool = False

    @property
    def adapter(self) -> str:
        return self.slot.internal if self.slot else BASE_ADAPTER

    @property
    def version(self) -> str:
        return f"{self.model}:{self.slot.version}" if self.slot else f"{self.model}:{self.engine.base_version}"

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.engine._release(self)


@dataclass
class Job:
    """A submitted request: ``n`` rows sharing one prompt and one lease."""

    lease: Lease
    rows: list[Row] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    finished_rows: int = 0
    started: float | None = None  # when its first row left the queue

    def cancel(self) -> None:
        """Stop generating (the client went away); the rows leave the batch at the next step."""
        self.cancelled = True


@dataclass
class Result:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    version: str
