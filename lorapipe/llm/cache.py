"""A disk cache of teacher/judge answers, so a rerun never pays for (or waits on) a call twice.

One SQLite database per cache directory (``<cache_dir>/llm-cache.sqlite``), shared by every client
and process that points at it. A row is keyed by the sha256 of the client's identity (endpoint and
model, or model weights), the messages and the sampling parameters including ``sample_index`` and
the seed, so N samples of one prompt are N rows and a different endpoint never answers for another.

Why SQLite in WAL mode: each :meth:`ResponseCache.put` is its own committed transaction, written
to the write-ahead log before it returns, so a ``kill -9`` at any instant keeps every answer already
stored and can never leave a half-written row or a corrupt file (SQLite rolls an interrupted
transaction back on the next open). ``synchronous=FULL`` also fsyncs each commit, so answers survive
a power cut; at teacher speeds (tens of answers per second) the fsync is invisible. Several threads
share one connection behind a lock; several processes coordinate through SQLite's own file locks
(``busy_timeout`` makes a writer wait instead of failing). Only successful answers are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from lorapipe.errors import TeacherError
from lorapipe.llm.base import ChatRequest, Completion

CACHE_FILE = "llm-cache.sqlite"
_KEY_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    request TEXT,
    created REAL NOT NULL
)
"""


def request_key(identity: dict[str, Any], request: ChatRequest, seed: int | None = None) -> str:
    """sha256 of what determines an answer: who answers, the messages, and every sampling knob."""
    params = request.params()
    params["seed"] = seed
    payload = {"v": _KEY_VERSION, "identity": identity, "messages": request.messages, "params": params}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Crash-safe, thread- and process-safe answer store. ``path`` is a directory or a ``.sqlite`` file."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        path = Path(path)
        self.path = path if path.suffix in (".sqlite", ".db") else path / CACHE_FILE
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    # A connection must not cross a fork: the child opens its own.
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)  # autocommit: every put is its own transaction
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise TeacherError(f"{self.path}: cannot open the answer cache ({e}); delete the file to start "
                               "a fresh cache (answers will be requested again) or set `cache: false`") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def get(self, key: str) -> Completion | None:
        """The stored answer for ``key`` as a ``Completion(cached=True)``, or ``None``."""
        with self._lock:
            row = self._connect().execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM responses WHERE key = ?",
                (key,)).fetchone()
        if row is None:
            return None
        return Completion(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], cached=True,
                          finish_reason=row[3])

    def put(self, key: str, completion: Completion, request: dict[str, Any] | None = None) -> None:
        """Store one answer durably (committed before this returns). Failed completions are ignored."""
        if completion.error is not None:
            return
        req = json.dumps(request, ensure_ascii=False, default=str) if request is not None else None
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, completion.text, completion.prompt_tokens, completion.completion_tokens,
                 completion.finish_reason, req, time.time()))

    def keys(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._connect().execute("SELECT key FROM responses")}

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def __bool__(self) -> bool:  # an empty cache is still a cache (`if cache:` must not mean `len > 0`)
        return True

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def integrity_ok(self) -> bool:
        """SQLite's own consistency check (used by the crash tests)."""
        with self._lock:
            return self._connect().execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def open_cache(enabled: bool, cache_dir: str | Path | None) -> ResponseCache | None:
    """The cache a client should use: none when caching is off or no directory was given."""
    if not enabled or cache_dir is None:
        return None
    return ResponseCache(cache_dir)


def split_cached(cache: ResponseCache | None, keys: list[str], usage: Any, prices: Any = None,
                 progress: Any = None) -> tuple[list[Completion | None], dict[str, list[int]]]:
    """Answer what the cache holds; return (results with hits filled in, key -> request indices to ask).

    Requests with the same key are asked once. Shared by every client so cache hits are counted
    (usage, progress) the same way everywhere.
    """
    results: list[Completion | None] = [None] * len(keys)
    todo: dict[str, list[int]] = {}
    hits = 0
    for i, key in enumerate(keys):
        hit = cache.get(key) if cache is not None and key not in todo else None
        if hit is not None:
            results[i] = hit
            usage.add(hit, prices)
            hits += 1
        else:
            todo.setdefault(key, []).append(i)
    if hits and progress:
        progress(hits)
    return results, todo
