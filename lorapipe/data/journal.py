"""What the data stages share: a crash-safe journal of finished work, and LLM calls keyed by it.

A stage that asks a teacher or judge for thousands of answers must survive a ``kill -9`` without
losing or repeating work. It names every unit of work with a stable key (e.g. ``<input id>:<sample>``),
asks the LLM for the missing keys in batches, and appends each finished batch to
``<stage>.partial.jsonl`` with one ``write`` followed by ``flush`` + ``fsync``. A rerun reads the
journal back, drops a torn last line (a kill during the write), and asks only for what is missing.
The journal's first line records the stage's fingerprint (config + inputs); a journal written under
a different config is discarded rather than mixed in.

The journal lives in the stage's ``out_dir`` and is deleted once the final files are written
(it is kept only when some requests failed for good, so a rerun retries just those).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lorapipe.llm.base import ChatRequest
from lorapipe.llm.calls import call

# A stage's ``progress`` is either a factory ``progress(description, total) -> tick`` (one bar per
# phase, the convention of lorapipe.probe) or a plain ``tick(n)`` that all phases advance (one bar).
# A tick is called with the number of items just finished.
Tick = Callable[[int], None]
PhaseProgress = Callable[[str, int], Tick] | Tick


def _is_factory(progress: Callable[..., Any]) -> bool:
    try:
        inspect.signature(progress).bind("phase", 1)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): treat as a plain tick
        return False
    return True


def phase(progress: PhaseProgress | None, description: str, total: int, done: int = 0) -> Tick | None:
    """Open a progress phase; items already done (resumed) are counted at once."""
    if progress is None:
        return None
    tick = progress(description, total) if _is_factory(progress) else progress
    if done and tick:
        tick(done)
    return tick


def normalize_text(text: str) -> str:
    """Case-folded, whitespace-collapsed text: what 'the same text' means for dedup and grounding."""
    return re.sub(r"\s+", " ", text).strip().casefold()


class Journal:
    """Append-only JSONL of finished entries (``{"k": key, ...}``), durable after each append."""

    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.entries: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write([{"journal": self.fingerprint}])

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end, pos, first = 0, 0, True
        while (nl := data.find(b"\n", pos)) != -1:
            try:
                obj = json.loads(data[pos:nl])
            except ValueError:
                break  # only a torn write can do this; nothing after it was acknowledged
            if first:
                if not isinstance(obj, dict) or obj.get("journal") != self.fingerprint:
                    # Written for another config or other inputs: start over rather than mix results.
                    self.path.unlink()
                    self.entries.clear()
                    return
                first = False
            elif isinstance(obj, dict) and "k" in obj:
                self.entries[obj["k"]] = obj
            pos = good_end = nl + 1
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        self.resumed = len(self.entries)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        # One write per batch, then fsync: after a kill the batch is either whole or a torn tail
        # that _load() cuts off. The file is opened per batch, so no handle outlives a crash.
        with open(self.path, "ab") as f:
            f.write(b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self._write(entries)
        for e in entries:
            self.entries[e["k"]] = e

    def close(self, delete: bool = False) -> None:
        """Done with the journal; ``delete`` once its entries live in the stage's final files."""
        if delete:
            self.path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- keyed LLM calls
def batched(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def complete_keyed(llm: Any, journal: Journal, items: list[tuple[str, ChatRequest]], *, batch_size: int,
                   tick: Tick | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Answers for every key: from the journal, or asked now (in batches, each journaled at once).

    Returns ``(texts, errors)``: ``texts[key]`` for each answered key, ``errors[key]`` for each request
    that failed for good (not journaled, so a rerun asks again).
    """
    pending = [(k, r) for k, r in dict(items).items() if k not in journal]
    errors: dict[str, str] = {}
    for chunk in batched(pending, batch_size):
        comps = call(llm, [r for _, r in chunk], tick)
        ok = []
        for (k, _), c in zip(chunk, comps):
            if c.error:
                errors[k] = c.error
            else:
                ok.append({"k": k, "text": c.text})
        journal.append(ok)
    texts = {k: journal.entries[k]["text"] for k, _ in items if k in journal}
    return texts, errors


