"""The scheduler thread: the only thread that touches the model.

It alternates between (1) running queued *commands* — adding or deleting adapter weights, which must
never race a forward pass — and (2) decoding: when idle it waits ``batch_window_s`` for requests to
gather into a batch, prefills them, then steps the batch one token at a time; requests that arrive
meanwhile are prefilled and join the running batch between two steps (continuous batching).

A failed forward pass fails the rows involved (their sink gets ``finish_reason="error"`` with the
message as text) and the scheduler keeps serving.

A row's sink hears three kinds of events: ``("", None)`` once, when the row is *admitted* (it has a
place in the batch: at once when there is room, else when a place frees; the HTTP layer sends its
headers only then); text deltas; and a final ``finish_reason``. Besides ``stop``/``length``/``error``,
a row can finish ``cancelled`` (its client went away, queued or mid-batch) or ``queue_timeout`` (no
place freed within ``queue_timeout_s``): every row's sink hears its end exactly once, so nothing it
holds (a lease, an in-flight slot) leaks.

Threads and OpenMP: torch's CPU kernels run on an OpenMP thread pool, one pool per thread that ever
ran a parallel region. The thread that loaded the model holds one; the scheduler thread starts a
second; with more pool threads than cores, libgomp stops spinning between regions and sleeps in the
kernel, and a batch-1 decode step on 2 cores ran at half speed (24 tok/s instead of 48 for
SmolLM2-135M, ``bench/decode.py``). :meth:`Scheduler.start` therefore frees the pool of the thread
that starts it (``omp_pause_resource_all``), which leaves the scheduler's pool the only one, and the
scheduler frees its own pool each time it falls idle: a second engine in the process (a benchmark's
merged arm, a test's second server) then decodes at full speed, and so does a training job next to an
idle server (with an idle engine's pool held, ``bench/serve_mixed.py``'s engines ran at 0.65-0.75x).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lorapipe.decoding.batch import Batch, Forward, Row, TextStream, prefill
from lorapipe.errors import ServeError
from lorapipe.serve.prefix import PrefixCache

log = logging.getLogger(__name__)


def free_openmp_pool() -> bool:
    """Free the calling thread's OpenMP thread pool (see the module docstring); False where torch does not
    run on OpenMP or the runtime has no ``omp_pause_resource_all``. The pool comes back on the thread's next
    parallel region."""
    import torch

    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        pause = ctypes.CDLL(None).omp_pause_resource_all  # the runtime torch loaded (libgomp, libomp)
    except (AttributeError, OSError):
        return False
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause(1) == 0  # omp_pause_soft


class EngineClosed(ServeError):
    """The engine is shutting down and takes no new requests (HTTP 503)."""


class Scheduler:
    def __init__(self, forward: Forward, stream: TextStream, pad_id: int, *, batch_window_s: float,
                 max_batch_size: int, queue_timeout_s: float | None = None, prefixes: PrefixCache | None = None):
        self.forward, self.stream, self.pad_id = forward, stream, pad_id
        self.batch_window_s, self.max_batch_size = batch_window_s, max_batch_size
        self.queue_timeout_s = queue_timeout_s
        self.prefixes = prefixes  # shared prompt prefixes computed once (see lorapipe.serve.prefix)
        self._placed = 0  # rows in the running batch or on their way into it (under the lock)
        self._joinable = True  # new rows can join the running batch between steps
        self._cv = threading.Condition()
        self._pending: deque[Row] = deque()
        self._commands: deque[tuple[Callable[[], Any], Future | None]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        with self._cv:
            if self._thread is None:
                free_openmp_pool()  # the scheduler thread's pool will be the one that decodes
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="lorapipe-scheduler", daemon=True)
                self._thread.start()

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Take no new rows, finish the queued and running ones, then stop."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # ------------------------------------------------------------------ work from other threads
    def submit(self, rows: list[Row]) -> None:
        """Queue ``rows``; those the batch has room for are admitted at once (see the module docstring)."""
        with self._cv:
            if self._stopping or self._thread is None:
                raise EngineClosed("the server is shutting down; retry on another replica")
            room = self.max_batch_size - self._placed - sum(r.admitted for r in self._pending)
            if not (self._joinable or self._placed == 0):
                room = 0
            admitted = rows[:max(0, room)]
            for row in admitted:
                row.admitted = True
            self._pending.extend(rows)
            self._cv.notify_all()
        for row in admitted:  # even while the scheduler is inside a long forward pass
            row.sink("", None)

    def enqueue(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the scheduler thread between two steps, without waiting for it."""
        with self._cv:
            self._commands.append((fn, None))
            self._cv.notify_all()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the scheduler thread (between two steps) and return its result."""
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            with self._cv:  # not started (or called from the scheduler itself): run here
                return fn()
        fut: Future = Future()
        with self._cv:
            self._commands.append((fn, fut))
            self._cv.notify_all()
        return fut.result()

    # ------------------------------------------------------------------ the thread
    def _run_commands(self) -> None:
        while True:
            with self._cv:
                if not self._commands:
                    return
                fn, fut = self._commands.popleft()
            try:
                result = fn()
            except BaseException as e:  # report to the caller; a failed delete is only logged
                if fut is not None:
                    fut.set_exception(e)
                else:
                    log.exception("scheduler command failed")
            else:
                if fut is not None:
                    fut.set_result(result)

    def _take_rows(self, room: int) -> list[Row]:
        rows = []
        while self._pending and len(rows) < room:
            rows.append(self._pending.popleft())
        return rows

    def _expired(self) -> list[tuple[Row, str]]:
        """Called under the lock: take the queued rows whose client left or that waited too long."""
        if not self._pending:
            return []
        now = time.monotonic()
        limit = self.queue_timeout_s
        out, keep = [], deque()
        for row in self._pending:
            if row.cancelled():
                out.append((row, "cancelled"))
            elif limit is not None and not row.admitted and now - row.queued_at > limit:
                out.append((row, "queue_timeout"))
            else:
                keep.append(row)
        if out:
            self._pending = keep
        return out

    def _prefill(self, rows: list[Row]) -> Batch:
        """Prefill ``rows`` as one batch: one forward pass per group of rows that share a kept prefix."""
        if self.prefixes is None:
            return prefill(self.forward, rows, self.stream, self.pad_id)
        batch = None
        for prefix, group in self.prefixes.plan(self.forward, rows):
            part = prefill(self.forward, group, self.stream, self.pad_id, prefix)
            if batch is None or not len(batch):
                batch = part
            elif len(part):
                batch.merge(part)
        assert batch is not None
        return batch

    def _run(self) -> None:
        batch: Batch | None = None
        mergeable = True
        pool_held = True  # this thread's OpenMP pool may hold threads (see the module docstring)
        while True:
            if self._commands:
                self._run_commands()
                pool_held = True
            with self._cv:
                busy = batch is not None and len(batch) > 0
                self._placed = len(batch) if busy else 0
                if not busy:
                    if not self._pending:
                        if self._stopping and not self._commands:
                            return
                        if pool_held:  # idle: give the cores' OpenMP threads back until work comes
                            free_openmp_pool()
                            pool_held = False
                        self._cv.wait(0.05)
                        continue
                    pool_held = True
                    deadline = time.monotonic() + self.batch_window_s
                    while len(self._pending) < self.max_batch_size and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cv.wait(left)
                expired = self._expired()
                room = self.max_batch_size - (len(batch) if busy else 0)
                new = self._take_rows(room) if (not busy or mergeable) else []
                self._placed += len(new)
                self._joinable = mergeable
            for row, reason in expired:  # sinks run outside the lock: they may release leases
                row.finish_reason = reason
                row.sink("", reason)
            for row in [r for r in new if r.cancelled()]:  # the client left while it queued
                row.finish_reason = "cancelled"
                row.sink("", "cancelled")
            new = [r for r in new if r.finish_reason is None]
            for row in [r for r in new if not r.admitted]:  # waited for a place: its prompt runs now
                row.admitted = True
                row.sink("", None)
            try:
                if new:
                    fresh = self._prefill(new)
                    if not busy:
                        batch = fresh
                        mergeable = batch.can_merge()
                    elif len(fresh):
                        batch.merge(fresh)
                elif busy:
                    batch.step(self.forward, self.stream)
            except Exception as e:  # fail the rows involved, keep serving
                log.exception("generation failed")
                for row in {id(r): r for r in new + (batch.rows if busy and batch else [])}.values():
                    if row.finish_reason is None:
                        row.finish_reason = "error"
                        row.sink(f"{type(e).__name__}: {e}", "error")
                batch = None
