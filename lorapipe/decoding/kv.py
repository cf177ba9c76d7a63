"""A KV cache whose per-layer buffers have room to grow: a decode step writes its token in place.

transformers' ``DynamicLayer`` appends with ``torch.cat``, which copies every cached key and value of
every layer at every step: at batch 16 and 200 cached tokens that is ~150 MB moved per step on
SmolLM2-135M, a third of what its weights cost. Here each layer keeps a buffer with spare columns
and a length; appending writes the new columns, and the buffer doubles when full.

The layout is the one :mod:`lorapipe.decoding.batch` works on: per layer ``keys``/``values`` of shape
``[rows, kv_heads, columns, head_dim]`` (left-padded rows, every row ending at the last column).
Assigning ``keys``/``values`` (what ``Batch.merge``/``keep`` and ``PrefixKV.expand`` do) copies the
tensor into a fresh buffer, so a cache copied with :func:`copy.copy` never writes into another's.
"""

from __future__ import annotations

import torch

HEADROOM = 64  # spare columns given to a fresh buffer


class KVLayer:
    """One layer's keys and values, ``[rows, kv_heads, columns, head_dim]`` views of larger buffers."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self._k, self._klen = _buffer(keys)
        self._v, self._vlen = _buffer(values)

    @property
    def keys(self) -> torch.Tensor:
        return self._k[:, :, :self._klen]

    @keys.setter
    def keys(self, t: torch.Tensor) -> None:
        self._k, self._klen = _buffer(t)

    @property
    def values(self) -> torch.Tensor:
        return self._v[:, :, :self._vlen]

    @values.setter
    def values(self, t: torch.Tensor) -> None:
        self._v, self._vlen = _buffer(t)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` (``[rows, kv_heads, new, head_dim]``) after the cached columns; return all."""
        n = k.shape[2]
        if self._klen + n > self._k.shape[2]:
            self._k = _grow(self._k, self._klen, self._klen + n)
        if self._vlen + n > self._v.shape[2]:
            self._v = _grow(self._v, self._vlen, self._vlen + n)
        self._k[:, :, self._klen:self._klen + n] = k
        self._v[:, :, self._vlen:self._vlen + n] = v
        self._klen += n
        self._vlen += n
        return self.keys, self.values

    def move_rows(self, moves: list[tuple[int, int]], rows: int) -> None:
        """Copy row ``src`` to row ``dst`` for each ``(src, dst)`` (all read before any is written), then keep
        the first ``rows`` rows (a view: nothing else is copied)."""
        if moves:
            src, dst = (torch.tensor(x) for x in zip(*moves, strict=True))
            with torch.inference_mode():  # the buffers were made in a forward pass (inference tensors)
                self._k[dst] = self._k[src]
                self._v[dst] = self._v[src]
        self._k, self._v = self._k[:rows], self._v[:rows]

    def select(self, idx: torch.Tensor) -> None:
        """Keep the rows at ``idx``: only the used columns are copied, into buffers with fresh headroom."""
        self._k = _take(self._k, self._klen, idx)
        self._v = _take(self._v, self._vlen, idx)


def assemble(sources: list[KVLayer], picks: list[tuple[int, int, int]], width: int, first: int = 0) -> KVLayer:
    """One layer made of rows of ``sources``, copied once: ``picks`` lists ``(source, first row, end row)``
    in the new row order. Each source is right-aligned in ``width`` columns (left padding, zeros: masked,
    and finite), and the columns before ``first`` are dropped. What joining two batches and dropping
    finished rows do, without the chain of cat / pad / index_select copies of the whole cache."""
    ref = sources[0]._k
    rows = sum(end - start for _, start, end in picks)
    cols = width - first
    out = []
    for name in ("_k", "_v"):
        buf = ref.new_empty((rows, ref.shape[1], cols + HEADROOM, ref.shape[3]))
        at = 0
        for src, start, end in picks:
            layer = sources[src]
            used = layer._klen
            pad = width - used  # columns of left padding this source gets
            skip = max(0, first - pad)  # its own columns that fall before `first`
            lead = max(0, pad - first)  # padding columns that remain
            if lead:
                buf[at:at + end - start, :, :lead].zero_()
            buf[at:at + end - start, :, lead:cols] = getattr(layer, name)[start:end, :, skip:used]
            at += end - start
        out.append(buf)
    layer = KVLayer.__new__(KVLayer)
    layer._k, layer._v, layer._klen, layer._vlen = out[0], out[1], cols, cols
    return layer


class KVCache:
    """Per-layer :class:`KVLayer` s; ``batch_select_indices`` keeps some rows (as transformers' caches do)."""

    def __init__(self, layers: list[KVLayer] | None = None):
        self.layers: list[KVLayer] = layers or []

    def get_seq_length(self) -> int:
        return int(self.layers[0].keys.shape[2]) if self.layers else 0

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select(idx)


def _buffer(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    n = t.shape[2]
    buf = t.new_empty((t.shape[0], t.shape[1], n + HEADROOM, t.shape[3]))
    buf[:, :, :n] = t
    return buf, n


def _grow(buf: torch.Tensor, used: int, need: int) -> torch.Tensor:
    new = buf.new_empty((buf.shape[0], buf.shape[1], max(need + HEADROOM, 2 * buf.shape[2]), buf.shape[3]))
    new[:, :, :used] = buf[:, :, :used]
    return new


def _take(buf: torch.Tensor, used: int, idx: torch.Tensor) -> torch.Tensor:
    new = buf.new_empty((len(idx), buf.shape[1], used + HEADROOM, buf.shape[3]))
    torch.index_select(buf[:, :, :used], 0, idx, out=new[:, :, :used])
    return new
