"""The fine-tuning server's state: one SQLite database and a content-addressed file store.

Layout of the server's data directory (``lorapipe serve --data-dir``)::

    ft.sqlite                    files, jobs, job events, checkpoints (WAL; this module is its only writer)
    blobs/sha256/ab/abcdef...    uploaded and result file contents, by sha256 (shared by identical uploads)
    jobs/<ftjob-id>/             one job's generated pipeline.yaml, its rows and its engine run (run/)
    registry/                    where finished adapters are pushed when the server has no --registry
    adapters/                    registry versions materialised for serving

Ids are OpenAI's: ``file-…``, ``ftjob-…``, ``ftevent-…``, ``ftckpt-…``. Lists are newest first and
paged with ``after`` (the last id of the previous page), as the SDK's ``SyncCursorPage`` expects.
Every row carries its owner (the tenant); the HTTP layer filters by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

DB_FILE = "ft.sqlite"
TERMINAL = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,
  bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
  status_details TEXT);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, org TEXT NOT NULL, created_at INTEGER NOT NULL, model TEXT NOT NULL,
  training_file TEXT NOT NULL, validation_file TEXT, suffix TEXT, seed INTEGER NOT NULL, metadata TEXT,
  hyperparameters TEXT NOT NULL, status TEXT NOT NULL, error TEXT, fine_tuned_model TEXT, finished_at INTEGER,
  trained_tokens INTEGER, result_files TEXT NOT NULL DEFAULT '[]', estimated_finish INTEGER,
  control TEXT, registry_ref TEXT, model_deleted INTEGER NOT NULL DEFAULT 0, events_seq INTEGER NOT NULL DEFAULT 0,
  pid INTEGER);
CREATE TABLE IF NOT EXISTS events (
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL, type TEXT NOT NULL,
  message TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
CREATE TABLE IF NOT EXISTS checkpoints (
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, step INTEGER NOT NULL,
  metrics TEXT NOT NULL, model TEXT NOT NULL, UNIQUE (job_id, step));
"""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def default_data_dir() -> Path:
    """``$LORAPIPE_DATA_DIR``, else ``$XDG_DATA_HOME/lorapipe/serve`` (``~/.local/share/lorapipe/serve``)."""
    if env := os.environ.get("LORAPIPE_DATA_DIR"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(data_home) / "lorapipe" / "serve"


def _load(value: str | None) -> Any:
    return json.loads(value) if value else None


class Store:
    """Thread-safe access to ``data_dir/ft.sqlite`` and the blobs beside it."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir).expanduser()
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / DB_FILE, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    # ------------------------------------------------------------------ blobs
    def blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / "sha256" / sha[:2] / sha

    def put_blob(self, src: BinaryIO) -> tuple[str, int]:
        """Copy ``src`` into the store (hashing as it goes); return (sha256, size)."""
        tmp = self.root / "blobs" / f".upload-{secrets.token_hex(8)}.tmp"
        h, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            sha = h.hexdigest()
            dest = self.blob_path(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)  # same content, same name: replacing is harmless
        finally:
            tmp.unlink(missing_ok=True)
        return sha, size

    # ------------------------------------------------------------------ files
    def add_file(self, tenant: str, filename: str, purpose: str, sha: str, size: int,
                 status: str = "processed") -> dict[str, Any]:
        fid = new_id("file")
        with self._lock:
            self._db.execute("INSERT INTO files VALUES (?,?,?,?,?,?,?,?,NULL)",
                             (fid, tenant, filename, purpose, size, sha, int(time.time()), status))
        return self.file(fid)  # type: ignore[return-value]

    def file(self, fid: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM files WHERE id=?", (fid,))
        return dict(rows[0]) if rows else None

    def files(self, tenant: str | None, *, purpose: str | None = None, after: str | None = None,
              limit: int = 10000, ascending: bool = False) -> tuple[list[dict[str, Any]], bool]:
        where, args = self._owned(tenant)
        if purpose:
            where.append("purpose=?")
            args.append(purpose)
        return self._page("files", where, args, after, limit, ascending)

    def delete_file(self, fid: str) -> None:
        f = self.file(fid)
        if f is None:
            return
        with self._lock:
            self._db.execute("DELETE FROM files WHERE id=?", (fid,))
            still_used = self._db.execute("SELECT 1 FROM files WHERE sha256=? LIMIT 1", (f["sha256"],)).fetchone()
        if not still_used:
            self.blob_path(f["sha256"]).unlink(missing_ok=True)

    # ------------------------------------------------------------------ jobs
    def add_job(self, **fields: Any) -> dict[str, Any]:
        jid = new_id("ftjob")
        row = {"id": jid, "created_at": int(time.time()), "status": "validating_files", **fields}
        for k in ("metadata", "hyperparameters"):
            row[k] = json.dumps(row.get(k)) if row.get(k) is not None else None
        cols = ", ".join(row)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return self.job(jid)  # type: ignore[return-value]

    def job(self, jid: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM jobs WHERE id=?", (jid,))
        return _job(rows[0]) if rows else None

    def jobs(self, tenant: str | None, *, after: str | None = None, limit: int = 20,
             metadata: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], bool]:
        where, args = self._owned(tenant)
        for k, v in (metadata or {}).items():
            where.append("json_extract(metadata, ?) = ?")
            args += [f'$."{k}"', v]
        rows, more = self._page("jobs", where, args, after, limit)
        return [_job(r) for r in rows], more

    def jobs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(statuses))
        return [_job(r) for r in self._q(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY rowid", statuses)]

    def update_job(self, jid: str, **fields: Any) -> dict[str, Any]:
        for k in ("error", "result_files", "hyperparameters", "metadata"):
            if k in fields and not isinstance(fields[k], str) and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), jid))
        return self.job(jid)  # type: ignore[return-value]

    def fine_tuned(self) -> dict[str, str]:
        """Every servable fine-tuned model -> its registry reference."""
        rows = self._q("SELECT fine_tuned_model, registry_ref FROM jobs WHERE status='succeeded' AND "
                       "model_deleted=0 AND fine_tuned_model IS NOT NULL AND registry_ref IS NOT NULL")
        return {r[0]: r[1] for r in rows}

    def job_of_model(self, model: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM jobs WHERE fine_tuned_model=? AND model_deleted=0", (model,))
        return _job(rows[0]) if rows else None

    # ------------------------------------------------------------------ events and checkpoints
    def add_event(self, jid: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None, created_at: int | None = None) -> None:
        with self._lock:
            self._db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                             (new_id("ftevent"), jid, created_at or int(time.time()), level, type, message,
                              json.dumps(data) if data is not None else None))

    def events(self, jid: str, *, after: str | None = None, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        rows, more = self._page("events", ["job_id=?"], [jid], after, limit)
        return [{**r, "data": _load(r["data"])} for r in rows], more

    def add_checkpoint(self, jid: str, step: int, metrics: dict[str, Any], model: str) -> bool:
        """Record a checkpoint once per (job, step); True when it is new."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO checkpoints VALUES (?,?,?,?,?,?)",
                                   (new_id("ftckpt"), jid, int(time.time()), step, json.dumps(metrics), model))
        return cur.rowcount > 0

    def checkpoints(self, jid: str, *, after: str | None = None,
                    limit: int = 10) -> tuple[list[dict[str, Any]], bool]:
        rows, more = self._page("checkpoints", ["job_id=?"], [jid], after, limit)
        return [{**r, "metrics": _load(r["metrics"])} for r in rows], more

    # ------------------------------------------------------------------ paging
    @staticmethod
    def _owned(tenant: str | None) -> tuple[list[str], list[Any]]:
        return (["tenant=?"], [tenant]) if tenant is not None else ([], [])

    def _page(self, table: str, where: list[str], args: list[Any], after: str | None, limit: int,
              ascending: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """Rows newest first (insertion order), starting after the row with id ``after``."""
        where, args = list(where), list(args)
        if after:
            where.append(f"rowid {'>' if ascending else '<'} (SELECT rowid FROM {table} WHERE id=?)")
            args.append(after)
        sql = f"SELECT * FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += f" ORDER BY rowid {'ASC' if ascending else 'DESC'} LIMIT ?"
        rows = [dict(r) for r in self._q(sql, [*args, limit + 1])]
        return rows[:limit], len(rows) > limit

    def iter_jobs(self) -> Iterator[dict[str, Any]]:
        yield from (_job(r) for r in self._q("SELECT * FROM jobs ORDER BY rowid"))


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    for k in ("metadata", "hyperparameters", "error", "result_files", "control"):
        if k != "control":
            job[k] = _load(job[k])
    return job


__all__ = ["DB_FILE", "TERMINAL", "Store", "default_data_dir", "new_id"]
