"""Prompt prefixes that many requests share are computed once: their KV is kept and reused.

A teacher pipeline sends the same system prompt and worked examples before every input: on the
demo config 640 of a request's ~697 prompt tokens (``bench/teacher_prompt_tokens.py``). Prefilling
them for every request was most of a CPU server's work and kept every client waiting; with the KV
of the shared part kept, a request costs its own ~57 tokens (``bench/serve_prefix.py`` measures it).

:class:`PrefixCache` lives on the scheduler thread. Before rows are prefilled, :meth:`PrefixCache.plan`
splits them into groups, each prefilled in one forward pass (:func:`lorapipe.decoding.batch.prefill`):

* rows whose prompt starts with a kept prefix (at least ``min_tokens`` of it; one prompt token is
  always left to run) reuse its KV;
* rows that share at least ``min_tokens`` with each other, or with a recent prompt of the same
  adapter, get that shared part computed now, once, and kept;
* the other rows are prefilled in full, as before.

A prefix is kept per adapter version (its KV depends on the adapter); kept prefixes are dropped
least-recently-used first beyond ``max_tokens`` in all, and with their adapter version.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import torch

from lorapipe.decoding.batch import Forward, PrefixKV, Row, common_prefix, plain_kv

Group = tuple[tuple[PrefixKV, int] | None, list[Row]]


class PrefixCache:
    """Kept prompt prefixes per adapter (see the module docstring). Not thread-safe: scheduler thread only."""

    def __init__(self, max_tokens: int = 4096, min_tokens: int = 64, recent: int = 32):
        self.max_tokens, self.min_tokens = max_tokens, min_tokens
        self._kept: OrderedDict[int, tuple[str, PrefixKV]] = OrderedDict()  # LRU, id -> (adapter, kv)
        self._recent: deque[tuple[str, list[int]]] = deque(maxlen=recent)
        self._ids = 0
        self.enabled = True  # off for caches that cannot be cut and joined (sliding window, quantized)
        self.hits = 0  # rows that reused a kept prefix
        self.reused_tokens = 0  # prompt tokens not computed thanks to it

    @property
    def tokens(self) -> int:
        return sum(len(kv.tokens) for _, kv in self._kept.values())

    def drop(self, adapter: str) -> None:
        """Forget the prefixes of an adapter version that is being deleted."""
        for key in [k for k, (a, _) in self._kept.items() if a == adapter]:
            del self._kept[key]

    def _best(self, row: Row) -> tuple[int, int]:
        """(key, usable length) of the kept prefix sharing most with ``row``'s prompt; (-1, 0) if none."""
        best, length = -1, 0
        for key, (adapter, kv) in self._kept.items():
            if adapter == row.adapter:
                n = min(common_prefix(kv.tokens, row.prompt), len(row.prompt) - 1)
                if n > length:
                    best, length = key, n
        return (best, length) if length >= self.min_tokens else (-1, 0)

    def plan(self, forward: Forward, rows: list[Row]) -> list[Group]:
        """Groups of ``rows`` to prefill, each with the prefix it reuses (None: a full prefill)."""
        if not self.enabled:
            return [(None, rows)]
        reuse: dict[int, list[tuple[Row, int]]] = {}
        rest = []
        for row in rows:
            key, n = self._best(row)
            if key >= 0:
                reuse.setdefault(key, []).append((row, n))
            else:
                rest.append(row)
        full = []
        while rest:
            row, others = rest[0], rest[1:]
            mates = [r for r in others
                     if r.adapter == row.adapter and common_prefix(r.prompt, row.prompt) >= self.min_tokens]
            if mates:
                n = min(common_prefix(r.prompt, row.prompt) for r in mates)
            else:
                n = max((common_prefix(p, row.prompt) for a, p in self._recent if a == row.adapter), default=0)
            n = min(n, *(len(r.prompt) - 1 for r in [row, *mates]))
            worth = self.enabled and self.min_tokens <= n <= self.max_tokens
            key = self._keep(forward, row.adapter, row.prompt[:n]) if worth else None
            if key is not None:
                reuse[key] = [(r, n) for r in [row, *mates]]
                rest = [r for r in others if r not in mates]
            else:
                full.append(row)
                rest = others
        groups: list[Group] = [(None, full)] if full else []
        for key, members in reuse.items():
            self._kept.move_to_end(key)
            n = min(m for _, m in members)
            self.hits += len(members)
            self.reused_tokens += n * len(members)
            groups.append(((self._kept[key][1], n), [r for r, _ in members]))
        self._recent.extend((r.adapter, r.prompt) for r in rows)
        self._trim(keep=set(reuse))
        return groups

    def _keep(self, forward: Forward, adapter: str, tokens: list[int]) -> int | None:
        """Run ``tokens`` once (batch 1) and keep their KV; None when this model's cache cannot be reused."""
        ids = torch.tensor([tokens], dtype=torch.long)
        mask = torch.ones_like(ids)
        _, cache = forward(ids, mask, torch.arange(len(tokens))[None, :], None, [adapter])
        if not plain_kv(cache):
            self.enabled = False
            return None
        self._ids += 1
        self._kept[self._ids] = (adapter, PrefixKV(list(tokens), cache))
        return self._ids

    def _trim(self, keep: set[int]) -> None:
        """Drop least-recently-used prefixes beyond ``max_tokens`` (never one this plan uses)."""
        for key in list(self._kept):
            if self.tokens <= self.max_tokens:
                return
            if key not in keep:
                del self._kept[key]


__all__ = ["PrefixCache", "common_prefix"]
