"""Token-by-token decoding of a batch whose rows each have their own adapter, sampling and stop rules.

`model.generate` takes one set of sampling parameters for the whole batch and cannot take new rows
while it runs, so the server decodes itself:

* :func:`prefill` runs new prompts (left-padded) and samples their first token;
* :meth:`Batch.merge` joins those rows to the running batch between two steps (continuous
  batching): both KV caches are left-padded to the same length and concatenated;
* :meth:`Batch.step` feeds every row its last token, samples the next one per row (greedy, or
  temperature/top-p with the row's own seeded generator) and streams the new text to the row's sink;
* finished rows leave the batch at once and the padding columns no row needs any more are trimmed,
  so one long answer does not slow the others down; with lorapipe's own KV layers a few kept rows
  move into the holes (not the whole cache) and trimming waits until a quarter of the columns are unused;
* rows are kept grouped by adapter, so a LoRA layer sees one contiguous run of rows per adapter.

Streaming text is decoded from the whole token list each step and only the part that can no longer
change is emitted: an incomplete UTF-8 character or the start of a stop string is held back.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lorapipe.decoding.grounded import Source

BASE_ADAPTER = "__base__"  # a row without an adapter (PEFT's name for it in a mixed batch)

# forward(input_ids, attention_mask, position_ids, cache, adapter_names) -> (last logits [B, V], cache)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, list[str]], tuple[torch.Tensor, Any]]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a random seed
    ignore_eos: bool = False  # keep going past end-of-sequence (benchmarks want fixed lengths)
    copy_from: str | Source | None = None  # grounded JSON: string values are pieces of this text (decoding.grounded)


@dataclass
class Row:
    """One answer being generated. ``sink(delta, finish_reason)`` gets text as it becomes final."""

    prompt: list[int]
    adapter: str  # internal PEFT adapter name, or "__base__"
    params: SamplingParams
    sink: Callable[[str, str | None], None]
    cancelled: Callable[[], bool] = lambda: False
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    emitted: int = 0  # characters of the answer already sent to the sink
    generator: torch.Generator | None = None
    queued_at: float = field(default_factory=time.monotonic)
    admitted: bool = False  # has a place in the batch (it may still wait for the current forward pass)
    vocab: Any = None  # decoding.grounded.Vocabulary, for rows whose params set copy_from
    grounding: Any = None  # their decoding.grounded.JsonCopy state

    def __post_init__(self) -> None:
        if self.params.copy_from is not None:
            from lorapipe.decoding.grounded import JsonCopy

            if self.vocab is None:
                raise ValueError("a row with copy_from needs the tokenizer's vocabulary (decoding.grounded)")
            self.grounding = JsonCopy(self.params.copy_from)
        if self.params.temperature > 0:
            self.generator = torch.Generator()
            if self.params.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.params.seed)


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def sample(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """One next token per row: argmax when greedy, else temperature + nucleus with the row's generator."""
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        p = row.params
        if p.temperature <= 0:
            continue
        probs = torch.softmax(logits[i] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least the top token)
            drop = sorted_p.cumsum(-1) - sorted_p > p.top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        out[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
    for i, row in enumerate(rows):
        if row.grounding is not None:  # the sampled token if it keeps values copied, else the best that does
            from lorapipe.decoding.grounded import choose

            out[i] = choose(logits[i], row.grounding, row.vocab, out[i])
            row.grounding.advance(row.vocab.table[out[i]] if out[i] < len(row.vocab.table) else b"")
    return out


class TextStream:
    """Turns a row's tokens into final text deltas, honouring stop strings."""

    def __init__(self, tokenizer: Any, eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    def push(self, row: Row, token: int) -> None:
        """Record ``token`` for ``row``, emit what became final, and set ``finish_reason`` when done."""
        if token in self.eos_ids and not row.params.ignore_eos:
            row.finish_reason = "stop"
        else:
            row.tokens.append(token)
            if len(row.tokens) >= row.params.max_tokens:
                row.finish_reason = "length"
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        end = len(text)
        stops = row.params.stop
        if stops:
            longest = max(len(s) for s in stops)
            start = max(0, row.emitted - longest)
            hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
            if hits:
                end, row.finish_reason = min(hits), "stop"
            elif row.finish_reason is None:
                # hold back a tail that could still grow into a stop string
                for k in range(min(longest - 1, len(text)), 0, -1):
                    if any(s.startswith(text[-k:]) for s in stops):
                        end = len(text) - k
                        break
        if row.finish_reason is None and text.endswith("\ufffd"):
            end = min(end, len(text) - 1)  # half a UTF-8 character: wait for the rest
        if end > row.emitted or row.finish_reason is not None:
            delta = text[row.emitted:end] if end > row.emitted else ""
            row.emitted = max(row.emitted, end)
            row.sink(delta, row.finish_reason)


@dataclass
class Batch:
    """Rows decoding together: their KV cache, attention mask, next positions and next inputs."""

    rows: list[Row]
    cache: Any
    mask: torch.Tensor  # [B, T] over the cached tokens; 0 = left padding
    pos: torch.Tensor  # [B] position of each row's next input token
    next_ids: list[int]  # the token each row feeds next (sampled, not yet in the cache)

    def __len__(self) -> int:
        return len(self.rows)

    def can_merge(self) -> bool:
        """Joining needs plain per-layer key/value tensors (not sliding-window or quantized caches)."""
        return plain_kv(self.cache)

    def merge(self, other: Batch) -> None:
        """Append ``other``'s rows; the shorter cache is left-padded so every row ends at the same column."""
        la, lb = self.mask.shape[1], other.mask.shape[1]
        width = max(la, lb)
        mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(other.mask, width)], dim=0)
        if _own_layers(self.cache) and _own_layers(other.cache):
            # rows straight into their place (grouped by adapter), padding and unused columns in one copy
            order = _by_adapter(self.rows + other.rows)
            self._rebuild([self.cache.layers, other.cache.layers], order, mask, width)
            self.pos = torch.cat([self.pos, other.pos])[order]
            self.rows = [(self.rows + other.rows)[i] for i in order]
            self.next_ids = [(self.next_ids + other.next_ids)[i] for i in order]
            return
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_seq(mine.keys, width), _pad_seq(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_pad_seq(mine.values, width), _pad_seq(theirs.values, width)], dim=0)
        self.mask = mask
        self.pos = torch.cat([self.pos, other.pos])
        self.rows += other.rows
        self.next_ids += other.next_ids
        self.keep(_by_adapter(self.rows))

    def keep(self, idx: list[int]) -> None:
        """Keep only the rows at ``idx``, then drop padding columns no remaining row attends to. With
        lorapipe's KV layers the kept rows may change places within their adapter's group."""
        if _own_layers(self.cache) and self.rows:
            if idx != list(range(len(self.rows))):  # move a few kept rows into the holes instead of copying all
                order = _fill_holes(self.rows, idx)
                moves = [(src, dst) for dst, src in enumerate(order) if src != dst]
                for layer in self.cache.layers:
                    layer.move_rows(moves, len(order))
                self.mask, self.pos = self.mask[order], self.pos[order]
                self.rows = [self.rows[i] for i in order]
                self.next_ids = [self.next_ids[i] for i in order]
            # trimming unused left columns copies the cache: worth it once they are a quarter of it
            if self.rows and (first := int(self.mask.any(dim=0).float().argmax())) * 4 >= self.mask.shape[1]:
                order = list(range(len(self.rows)))
                self._rebuild([self.cache.layers], order, self.mask, self.mask.shape[1])
            return
        if idx != list(range(len(self.rows))):
            t = torch.tensor(idx, dtype=torch.long)
            self.cache.batch_select_indices(t)
            self.mask, self.pos = self.mask[t], self.pos[t]
            self.rows = [self.rows[i] for i in idx]
            self.next_ids = [self.next_ids[i] for i in idx]
        if self.rows and self.can_merge():
            first = int(self.mask.any(dim=0).float().argmax())  # first column some row still uses
            if first > 0:
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                self.mask = self.mask[:, first:]

    def _rebuild(self, sources: list[list[Any]], order: list[int], mask: torch.Tensor, width: int) -> None:
        """The cache and mask of rows ``order`` (indices over the sources' rows, in turn), each layer copied
        once, from the first column some kept row uses."""
        from lorapipe.decoding.kv import assemble

        mask = mask[order]
        first = int(mask.any(dim=0).float().argmax()) if order else 0
        sizes = [int(layers[0].keys.shape[0]) for layers in sources]
        picks = _picks(order, sizes)
        self.cache.layers = [assemble(list(parts), picks, width, first) for parts in zip(*sources, strict=True)]
        self.mask = mask[:, first:]

    def step(self, forward: Forward, stream: TextStream) -> None:
        """Feed each row its next token, sample the following one, and drop rows that finished."""
        ids = torch.tensor(self.next_ids, dtype=torch.long)[:, None]
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long)], dim=1)
        logits, self.cache = forward(ids, self.mask, self.pos[:, None], self.cache,
                                     [r.adapter for r in self.rows])
        self.pos = self.pos + 1
        self.next_ids = sample(logits, self.rows)
        self._advance(stream)

    def _advance(self, stream: TextStream) -> None:
        for row, tok in zip(self.rows, self.next_ids, strict=True):
            if row.cancelled():  # the client went away: tell the sink, which frees the request's slot
                row.finish_reason = "cancelled"
                row.sink("", "cancelled")
            else:
                stream.push(row, tok)
        self.keep([i for i, r in enumerate(self.rows) if r.finish_reason is None])


def _own_layers(cache: Any) -> bool:
    from lorapipe.decoding.kv import KVLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is KVLayer for layer in layers)


def _fill_holes(rows: list[Row], idx: list[int]) -> list[int]:
    """The order of the kept rows ``idx`` (old indices) that moves fewest of them: rows stay grouped by
    adapter (in ``_by_adapter`` order), a row already inside its group's new range stays where it is,
    and the others fill the holes. The order within a group does not matter (rows are independent)."""
    order: list[int] = []
    for adapter in sorted({rows[i].adapter for i in idx}):
        members = [i for i in idx if rows[i].adapter == adapter]
        start, end = len(order), len(order) + len(members)
        staying = {i for i in members if start <= i < end}
        movers = iter(i for i in members if i not in staying)
        order += [i if i in staying else next(movers) for i in range(start, end)]
    return order


def _picks(order: list[int], sizes: list[int]) -> list[tuple[int, int, int]]:
    """``order`` (row indices over sources of ``sizes`` rows, one after another) as runs ``(source, start, end)``."""
    bounds = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    runs: list[tuple[int, int, int]] = []
    for i in order:
        src = next(k for k in range(len(sizes)) if i < bounds[k + 1])
        row = i - bounds[src]
        if runs and runs[-1][0] == src and runs[-1][2] == row:
            runs[-1] = (src, runs[-1][1], row + 1)
        else:
            runs.append((src, row, row + 1))
    return runs


def plain_kv(cache: Any) -> bool:
    """Whether ``cache`` holds plain per-layer key/value tensors that rows can be cut from and joined to."""
    from transformers.cache_utils import DynamicLayer

    from lorapipe.decoding.kv import KVLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, KVLayer) for layer in layers)


@dataclass
class PrefixKV:
    """The KV cache of a prompt prefix (batch 1), computed once and reused by rows that start with it."""

    tokens: list[int]
    cache: Any  # what the model returned for ``tokens``: per-layer keys/values [1, H, len(tokens), D]

    def expand(self, rows: int, length: int) -> Any:
        """A cache holding the first ``length`` tokens' KV once per row (the stored one is not touched)."""
        cache = copy.copy(self.cache)
        cache.layers = []
        for layer in self.cache.layers:
            mine = copy.copy(layer)
            mine.keys = layer.keys[:, :, :length].expand(rows, -1, -1, -1).contiguous()
            mine.values = layer.values[:, :, :length].expand(rows, -1, -1, -1).contiguous()
            cache.layers.append(mine)
        return cache


def prefill(forward: Forward, rows: list[Row], stream: TextStream, pad_id: int,
            prefix: tuple[PrefixKV, int] | None = None) -> Batch:
    """Run the prompts of ``rows`` and sample each one's first token; finished rows are dropped.

    With ``prefix = (kv, n)`` every row's prompt starts with ``kv.tokens[:n]``: only the rest is run,
    after that KV. Each row is then ``[prefix][padding][its own tokens]``; the mask hides the padding
    and positions continue from ``n``, so the answer is the one a full prefill gives."""
    rows = [rows[i] for i in _by_adapter(rows)]
    kv, n = prefix if prefix is not None else (None, 0)
    ids, mask = _left_pad([r.prompt[n:] for r in rows], pad_id)
    position_ids = n + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    if kv is not None:
        cache = kv.expand(len(rows), n)
        mask = torch.cat([torch.ones((len(rows), n), dtype=torch.long), mask], dim=1)
    logits, cache = forward(ids, mask, position_ids, cache, [r.adapter for r in rows])
    batch = Batch(rows, cache, mask, mask.sum(-1), sample(logits, rows))
    batch._advance(stream)
    return batch


def _by_adapter(rows: list[Row]) -> list[int]:
    """Row order that groups rows sharing an adapter (stable), so LoRA runs once per adapter run."""
    return sorted(range(len(rows)), key=lambda i: rows[i].adapter)


def _pad_seq(t: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a [B, H, T, D] key/value tensor with zeros to T = width (masked out anyway)."""
    if t.shape[2] == width:
        return t
    pad = t.new_zeros((t.shape[0], t.shape[1], width - t.shape[2], t.shape[3]))
    return torch.cat([pad, t], dim=2)


def _pad_mask(m: torch.Tensor, width: int) -> torch.Tensor:
    if m.shape[1] == width:
        return m
    return torch.cat([m.new_zeros((m.shape[0], width - m.shape[1])), m], dim=1)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (slices compare in C, 64 at a time)."""
    n, i = min(len(a), len(b)), 0
    while i + 64 <= n and a[i:i + 64] == b[i:i + 64]:
        i += 64
    while i < n and a[i] == b[i]:
        i += 1
    return i
