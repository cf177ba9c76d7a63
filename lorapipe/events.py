"""The engine's event stream: typed events to subscribers and to ``run_dir/events.jsonl``.

Every surface reads the same stream: the terminal's progress bars are one subscriber, the file is
another, and a jobs API or a UI reads the file (or subscribes in-process). An event is one flat JSON
object::

    {"seq": 17, "ts": "2026-12-02T09:14:03.512Z", "run": "a1b2c3", "type": "progress",
     "stage": "generate", "phase": "generate: teacher outputs", "n": 40, "total": 280}

``seq`` grows by one per event across resumed runs; ``run`` names one ``lorapipe run`` invocation.
Types (:data:`TYPES`) and their fields:

* ``run_started`` (``stages``: the planned ones, ``config``: path), ``run_finished`` (``ran``,
  ``skipped``, ``seconds``, ``failed``: per-stage counts of requests that failed for good),
  ``run_failed`` (``error``, ``error_type``)
* ``stage_started`` (``why``: what changed since the recorded run, e.g. ``["code:teacher"]``),
  ``stage_skipped``, ``stage_finished`` (``seconds``, ``metrics``), ``stage_failed`` (``error``)
* ``progress`` (``phase``, ``n`` done so far, ``total`` or null)
* ``train_metrics`` (``step``, ``total_steps``, ``epoch``, ``loss``, ``learning_rate``, ...),
  ``eval_metrics`` (``step``, ``eval_loss``, ...)
* ``message`` (``text``: a result worth showing, e.g. the probe's verdict), ``warning`` (``text``)

The file is append-only, one event per line, flushed after each line and fsynced at stage
boundaries: after a crash it is readable up to its last complete line (:func:`read_events` drops a
torn tail), and the next run appends to it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["EVENTS_FILE", "TYPES", "Event", "EventBus", "EventLog", "WarningsToEvents", "read_events"]

EVENTS_FILE = "events.jsonl"
TYPES = ("run_started", "run_finished", "run_failed", "stage_started", "stage_skipped", "stage_finished",
         "stage_failed", "progress", "train_metrics", "eval_metrics", "message", "warning")
# Stage boundaries: the file is fsynced after these, so a reader after a crash sees them.
_DURABLE = {"run_started", "run_finished", "run_failed", "stage_started", "stage_skipped", "stage_finished",
            "stage_failed"}

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class EventBus:
    """Fan events out to subscribers, in order, from any thread."""

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.seq = 0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, type: str, stage: str | None = None, **data: Any) -> Event:
        if type not in TYPES:
            raise ValueError(f"unknown event type {type!r}; one of {', '.join(TYPES)}")
        with self._lock:
            self.seq += 1
            event: Event = {"seq": self.seq, "ts": _now(), "run": self.run_id, "type": type}
            if stage is not None:
                event["stage"] = stage
            event.update(data)
            for fn in list(self._subscribers):
                fn(event)
        return event

    def progress(self, stage: str) -> Callable[[str, int | None], Callable[[int], None]]:
        """A stage's ``progress(phase, total) -> tick(n)`` factory that emits ``progress`` events.

        Ticks are coalesced to at most ~4 events a second per phase (plus the first and the last), so
        a stage that ticks per token cannot flood the stream.
        """
        def factory(phase: str, total: int | None) -> Callable[[int], None]:
            state = {"n": 0, "last": 0.0}
            self.emit("progress", stage, phase=phase, n=0, total=total)

            def tick(n: int = 1) -> None:
                state["n"] += n
                now = time.monotonic()
                if now - state["last"] >= 0.25 or (total is not None and state["n"] >= total):
                    state["last"] = now
                    self.emit("progress", stage, phase=phase, n=state["n"], total=total)

            return tick

        return factory


class WarningsToEvents(logging.Handler):
    """A logging handler: library warnings (``log.warning`` in lorapipe's modules) become ``warning``
    events on ``bus``, of the stage ``stage()`` names (the one running now)."""

    def __init__(self, bus: EventBus, stage: Callable[[], str | None]):
        super().__init__(logging.WARNING)
        self.bus, self.stage = bus, stage

    def emit(self, record: logging.LogRecord) -> None:
        self.bus.emit("warning", self.stage(), text=record.getMessage(), logger=record.name)


class EventLog:
    """Subscriber appending each event to ``path`` (JSON line, flushed; fsynced at stage boundaries).

    Opening it repairs a torn last line and continues ``seq`` from the last complete event.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        events, good_end = _scan(self.path)
        if self.path.exists() and good_end < self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        self.last_seq = events[-1]["seq"] if events and isinstance(events[-1].get("seq"), int) else 0
        self._f = open(self.path, "ab")

    def attach(self, bus: EventBus) -> Callable[[], None]:
        bus.seq = max(bus.seq, self.last_seq)
        return bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        self._f.write(json.dumps(event, ensure_ascii=False, default=str).encode() + b"\n")
        self._f.flush()
        if event["type"] in _DURABLE:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


def _scan(path: Path) -> tuple[list[Event], int]:
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    events, pos, good_end = [], 0, 0
    while (nl := data.find(b"\n", pos)) != -1:
        try:
            obj = json.loads(data[pos:nl])
        except ValueError:
            break  # a torn write (kill -9 mid-line); nothing after it was written whole
        if isinstance(obj, dict):
            events.append(obj)
        pos = good_end = nl + 1
    return events, good_end


def read_events(path: str | Path, after: int = 0) -> list[Event]:
    """The complete events in ``path`` with ``seq > after`` (a torn last line is ignored)."""
    return [e for e in _scan(Path(path))[0] if int(e.get("seq") or 0) > after]


def follow(path: str | Path, after: int = 0, poll_s: float = 0.2,
           stop: Callable[[], bool] = lambda: False) -> Iterator[Event]:
    """Yield events as they are appended (for a UI's live view), until ``stop()`` is true."""
    seen = after
    while True:
        new = read_events(path, seen)
        for e in new:
            seen = int(e["seq"])
            yield e
        if stop():
            return
        time.sleep(poll_s)
