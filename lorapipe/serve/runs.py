"""Run folders as the runs API sees them: a summary per run, its rows page by page, its events as they come.

A run folder is what ``lorapipe run`` writes (``config.json``, ``run.json``, ``events.jsonl`` and one
folder per stage with its ``manifest.json``). :class:`RunStore` knows a directory of such folders
(``lorapipe serve --runs DIR``); DIR may itself be one run.

Rows are never loaded whole: :class:`RowIndex` scans a JSONL file once (and again only when its size
or mtime changes) and keeps, per line, its byte offset and the few fields the filters need (origin,
score, reason kinds); a page then reads just its lines with ``seek``. Full-text search reads the
candidate lines one at a time.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.data.card import FILES
from lorapipe.data.rubric import reason_kind
from lorapipe.events import EVENTS_FILE, TYPES
from lorapipe.pipeline.stages import STAGES

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Which files each kind of row comes from (file names owned by lorapipe.data.card.FILES). `kept` is the
# final kept set: augment's output when augment ran (it holds score's kept rows plus the added ones).
KINDS: dict[str, list[tuple[str, ...]]] = {
    "generated": [("generate", FILES["generate"][0])],
    "kept": [("augment", FILES["augment"][0]), ("score", FILES["score"][0])],  # the first that exists
    "rejected": [("score", FILES["score"][1]), ("augment", FILES["augment"][1]), ("split", FILES["split"][2])],
    "train": [("split", FILES["split"][0])],
    "eval": [("split", FILES["split"][1])],
}
_FIRST_ONLY = {"kept"}
_ENDED = {"run_finished", "run_failed"}
assert {"run_started", "stage_started", "stage_finished", "stage_skipped", "stage_failed"} <= set(TYPES)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class _Entry:
    offset: int
    origin: str
    score: float | None
    reasons: tuple[str, ...]
    source: str  # which file, for rejected rows from several stages


@dataclass
class RowIndex:
    """Offsets and filter fields of one JSONL file, rebuilt when the file changes."""

    path: Path
    stamp: tuple[int, int] = (-1, -1)
    entries: list[_Entry] = field(default_factory=list)

    def refresh(self, source: str) -> RowIndex:
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) == self.stamp:
            return self
        entries = []
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                if line.strip() and line.endswith(b"\n"):  # a torn last line is not a row yet
                    try:
                        row = json.loads(line)
                    except ValueError:
                        row = None
                    if isinstance(row, dict):
                        meta = row.get("meta") or {}
                        score = meta.get("score")
                        entries.append(_Entry(offset, str(meta.get("origin") or "unknown"),
                                              float(score) if isinstance(score, (int, float)) else None,
                                              tuple(str(r) for r in meta.get("reasons") or ()), source))
                offset += len(line)
        self.entries, self.stamp = entries, (st.st_size, st.st_mtime_ns)
        return self

    def read(self, entry: _Entry) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            f.seek(entry.offset)
            return json.loads(f.readline())


def _text_of(row: dict[str, Any]) -> str:
    parts = [str(m.get("content") or "") for m in row.get("messages") or [] if isinstance(m, dict)]
    meta = row.get("meta") or {}
    parts += [str(row.get("input") or ""), str(meta.get("rationale") or ""), " ".join(map(str, meta.get("reasons")
                                                                                         or ())), str(meta.get("id"))]
    return "\n".join(parts).lower()


@dataclass
class RowQuery:
    kind: str = "kept"
    origin: str | None = None  # exact, or a prefix ending in ':' (`edge:` = every edge case)
    min_score: float | None = None
    max_score: float | None = None
    reason: str | None = None  # a reason kind (`grounding`, `duplicate`...)
    q: str | None = None
    offset: int = 0
    limit: int = 50


class RunStore:
    """The run folders under ``root`` (or ``root`` itself when it is one)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self._indexes: dict[Path, RowIndex] = {}
        self._lock = threading.Lock()

    @staticmethod
    def is_run(path: Path) -> bool:
        return (path / EVENTS_FILE).is_file() or (path / "config.json").is_file() or (path / "run.json").is_file()

    def ids(self) -> list[str]:
        if self.is_run(self.root):
            return [self.root.name]
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and RUN_ID_RE.match(p.name) and self.is_run(p))

    def path(self, run_id: str) -> Path | None:
        """The folder of ``run_id``, or None when there is no such run (names are checked, never joined raw)."""
        if not RUN_ID_RE.match(run_id):
            return None
        if self.is_run(self.root):
            return self.root if run_id == self.root.name else None
        p = self.root / run_id
        return p if p.is_dir() and self.is_run(p) else None

    # ---------------------------------------------------------------- summary
    def summary(self, run_id: str, run_dir: Path) -> dict[str, Any]:
        """Status and timings per stage, from the events (the manifests when there are none)."""
        from lorapipe.events import read_events

        events = read_events(run_dir / EVENTS_FILE) if (run_dir / EVENTS_FILE).is_file() else []
        starts = [i for i, e in enumerate(events) if e.get("type") == "run_started"]
        last = events[starts[-1]:] if starts else events
        stages: dict[str, dict[str, Any]] = {}
        planned = (last[0].get("stages") if last and last[0].get("type") == "run_started" else None) or []
        for name in planned:
            stages[name] = {"name": name, "status": "pending", "seconds": None}
        status = "unknown"
        progress: dict[str, Any] | None = None
        for e in last:
            t, st = e.get("type"), e.get("stage")
            if t == "run_started":
                status = "running"
            elif t in _ENDED:
                status = "finished" if t == "run_finished" else "failed"
            elif st and t and t.startswith("stage_"):
                s = stages.setdefault(st, {"name": st, "status": "pending", "seconds": None})
                s["status"] = {"stage_started": "running", "stage_skipped": "skipped", "stage_finished": "ran",
                               "stage_failed": "failed"}[t]
                if t == "stage_finished":
                    s["seconds"] = e.get("seconds")
                if t == "stage_failed":
                    s["error"] = e.get("error")
                if t == "stage_started":
                    s["started"] = e.get("ts")
            elif t == "progress":
                progress = {k: e.get(k) for k in ("stage", "phase", "n", "total")}
        if not events:  # an older run folder: what its manifests say
            for name in STAGES:
                m = _read_json(run_dir / name / "manifest.json")
                if m:
                    stages[name] = {"name": name, "status": "ran", "seconds": None}
            status = "finished" if stages else "unknown"
        if status != "running":
            progress = None
            for s in stages.values():
                if s["status"] == "running":
                    s["status"] = "interrupted"  # started, never ended: the process died
        timing = (_read_json(run_dir / "run.json") or {}).get("seconds") or {}
        for s in stages.values():
            if s["seconds"] is None and s["status"] in ("ran", "skipped") and s["name"] in timing:
                s["seconds"] = timing[s["name"]]
        order = {n: i for i, n in enumerate(STAGES)}
        return {"id": run_id, "object": "run", "status": status,
                "started": last[0].get("ts") if last else None, "updated": events[-1].get("ts") if events else None,
                "last_seq": events[-1].get("seq") if events else 0,
                "stages": sorted(stages.values(), key=lambda s: order.get(s["name"], 99)), "progress": progress}

    def detail(self, run_id: str, run_dir: Path) -> dict[str, Any]:
        """The summary plus config, data card, stage metrics, the A/B verdict and which files exist."""
        out = self.summary(run_id, run_dir)
        out["config"] = _read_json(run_dir / "config.json")
        card = run_dir / "data_card"
        out["data_card"] = {"markdown": (card / "data_card.md").read_text(encoding="utf-8")
                            if (card / "data_card.md").is_file() else None, "json": _read_json(card / "data_card.json")}
        out["metrics"] = {name: (_read_json(run_dir / name / "manifest.json") or {}).get("metrics")
                          for name in STAGES if (run_dir / name / "manifest.json").is_file()}
        ab = _read_json(run_dir / "evaluate" / "ab.json")
        out["ab"] = {k: ab.get(k) for k in ("verdict", "arms", "n", "comparisons", "task")} if ab else None
        out["report"] = (run_dir / "evaluate" / "report.html").is_file()
        out["kinds"] = {k: sum(len(self._index(p, src).entries) for p, src in self._files(run_dir, k))
                        for k in KINDS}
        return out

    # ---------------------------------------------------------------- rows
    def _files(self, run_dir: Path, kind: str) -> list[tuple[Path, str]]:
        found = [(run_dir / stage / name, stage) for stage, name in KINDS[kind] if (run_dir / stage / name).is_file()]
        return found[:1] if kind in _FIRST_ONLY else found

    def _index(self, path: Path, source: str) -> RowIndex:
        with self._lock:
            idx = self._indexes.setdefault(path, RowIndex(path))
            return idx.refresh(source)

    def rows(self, run_dir: Path, query: RowQuery) -> dict[str, Any]:
        """One page of rows matching ``query``, the number of matches, and the facets to filter by."""
        if query.kind not in KINDS:
            raise ValueError(f"kind `{query.kind}` is not a kind of rows; use one of {', '.join(KINDS)}")
        needle = (query.q or "").strip().lower()
        origins: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        page: list[dict[str, Any]] = []
        total = 0
        for path, source in self._files(run_dir, query.kind):
            idx = self._index(path, source)
            for entry in idx.entries:
                kinds = {reason_kind(r) for r in entry.reasons}
                origins[entry.origin] += 1
                reasons.update(kinds)
                if not _matches(entry, kinds, query):
                    continue
                row = None
                if needle:
                    row = idx.read(entry)
                    if needle not in _text_of(row):
                        continue
                if query.offset <= total < query.offset + query.limit:
                    row = row or idx.read(entry)
                    page.append({"row": total, "source": f"{source}/{path.name}", **row})
                total += 1
        return {"object": "list", "kind": query.kind, "total": total, "offset": query.offset, "limit": query.limit,
                "data": page, "facets": {"origin": dict(origins.most_common()), "reason": dict(reasons.most_common())}}


def _matches(e: _Entry, kinds: set[str], q: RowQuery) -> bool:
    if q.origin:
        if q.origin.endswith(":") and not e.origin.startswith(q.origin):
            return False
        if not q.origin.endswith(":") and e.origin != q.origin:
            return False
    if q.min_score is not None and (e.score is None or e.score < q.min_score):
        return False
    if q.max_score is not None and (e.score is None or e.score > q.max_score):
        return False
    return not (q.reason and q.reason not in kinds)


class EventTail:
    """Read ``events.jsonl`` incrementally: each :meth:`poll` returns the complete new events."""

    def __init__(self, path: Path, after: int = 0):
        self.path, self.after, self._pos, self._buf = path, after, 0, b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self._pos:  # truncated (a torn line repaired): read again from the start
            self._pos, self._buf = 0, b""
        if size == self._pos:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read(size - self._pos)
        self._pos = size
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and int(e.get("seq") or 0) > self.after:
                self.after = int(e["seq"])
                out.append(e)
        return out


__all__ = ["KINDS", "EventTail", "RowIndex", "RowQuery", "RunStore"]
