"""How many requests an endpoint client keeps in flight: additive increase, multiplicative decrease.

A local server (``lorapipe serve``, Ollama, vLLM on a small GPU) that is sent more than it can run
answers slowly, times out, or says 503/429. Retrying at the same rate keeps it overloaded, so every
retry times out too. :class:`AdaptiveLimit` starts at the configured concurrency, halves on such a
signal and climbs back by about one per round of successful requests, as TCP does with its window.

A burst of failures of requests that were all in flight together is one signal, not many: a
failure cuts the limit only if its request was sent after the last cut, and only requests sent
after it count as proof that the new rate works.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    """One request's place in flight: the cut count when it was sent."""

    epoch: int


class AdaptiveLimit:
    """At most ``limit`` requests in flight, ``1 <= limit <= maximum`` (thread-safe)."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self.cuts = 0  # how many times the limit was halved
        self.lowest = maximum  # the lowest whole limit reached
        self._cv = threading.Condition()

    def acquire(self, cancelled: threading.Event | None = None) -> Ticket | None:
        """Wait for a free place; None when ``cancelled`` is set meanwhile."""
        with self._cv:
            while self.in_flight >= int(self.limit):
                if cancelled is not None and cancelled.is_set():
                    return None
                self._cv.wait(0.1)
            self.in_flight += 1
            return Ticket(self.cuts)

    def release(self, ticket: Ticket, *, ok: bool = True, congested: bool = False) -> tuple[int, int] | None:
        """Free the place; return ``(old, new)`` when this release lowered the limit."""
        with self._cv:
            self.in_flight -= 1
            changed = None
            if congested and ticket.epoch == self.cuts:
                old = int(self.limit)
                self.limit = max(1.0, self.limit / 2)
                self.cuts += 1  # a new round even at 1: only requests sent from now on may raise it again
                self.lowest = min(self.lowest, int(self.limit))
                changed = (old, int(self.limit)) if int(self.limit) < old else None
            elif ok and not congested and ticket.epoch == self.cuts:  # sent at the current rate, and it coped
                self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._cv.notify_all()
            return changed
