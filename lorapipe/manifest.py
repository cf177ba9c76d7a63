"""Manifests and atomic writes.

Every artifact directory holds a ``manifest.json``: sha256 of each input and output file, the hash
of the stage's config, the resolved config, parent artifacts, package versions and git revision.
A stage whose recorded input and config hashes match the current ones is skipped.

Nothing is written half: :func:`atomic_write` and :func:`atomic_dir` write to a temporary path next
to the target and ``os.replace`` it into place, so a kill -9 leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safetensors_problem(path: str | Path, max_header: int = 100 << 20) -> str | None:
    """Why ``path`` is not a whole safetensors file (bad header, truncated, padded), or None.

    Reads the header only: 8 bytes of little-endian length, that many bytes of JSON whose tensors'
    ``data_offsets`` must end exactly at the end of the file. A flipped bit inside the tensor data is
    not seen here; the sha256 in a manifest catches that.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short to be a safetensors file"
            n = int.from_bytes(head, "little")
            if n > min(size - 8, max_header):
                return f"its header claims {n} bytes but the file has {size}; truncated or not safetensors"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"cannot read it: {e}"
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return f"the header is not valid JSON ({e}); truncated or not safetensors"
    if not isinstance(header, dict):
        return "the header is not a JSON object; not safetensors"
    end = 0
    for name, t in header.items():
        offsets = t.get("data_offsets") if isinstance(t, dict) and name != "__metadata__" else None
        if name == "__metadata__":
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            return f"tensor `{name}` has no valid data_offsets in the header"
        end = max(end, offsets[1])
    if 8 + n + end != size:
        return f"the header describes {8 + n + end} bytes but the file has {size}; truncated or damaged"
    return None


def sha256_tree(path: str | Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every file below ``path`` (relative posix path -> hash), sorted."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name not in exclude:
            out[p.relative_to(path).as_posix()] = sha256_file(p)
    return out


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask: what ``open()``/``mkdir()`` would give a new file or folder.

    ``mkstemp``/``mkdtemp`` create owner-only temporaries; an output renamed from one must get this
    mode instead, or a reader running as another user (a vLLM server, a shared registry) is locked out.
    """
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return mode & ~mask


def atomic_write(path: str | Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())  # not mkstemp's owner-only 0o600
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds."""
    target = Path(os.path.abspath(target))  # `.` or `x/..` name no folder to put a sibling temp dir in
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    # mkdtemp makes the folder owner-only (0o700); the result is an output like any other file, so it
    # gets the permissions the umask gives a new folder (a vLLM running as another user must read it)
    os.chmod(tmp, umask_mode(0o777))
    try:
        yield tmp
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lorapipe", "torch", "transformers", "peft", "accelerate", "safetensors", "gguf"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_revision(cwd: str | Path | None = None) -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Manifest:
    """What a stage read, how it was configured, and what it wrote."""

    stage: str
    config_hash: str
    inputs: dict[str, str] = field(default_factory=dict)  # logical name -> sha256
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    config: dict[str, Any] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    git_revision: str | None = field(default_factory=git_revision)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def key(self) -> str:
        """What decides whether the stage must run again: its config and its inputs."""
        return sha256_json({"stage": self.stage, "config": self.config_hash, "inputs": self.inputs})

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        self.outputs = sha256_tree(out_dir)
        atomic_write_json(out_dir / MANIFEST, asdict(self))
        return out_dir / MANIFEST

    @classmethod
    def load(cls, out_dir: str | Path) -> Manifest | None:
        p = Path(out_dir) / MANIFEST
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (json.JSONDecodeError, TypeError):
            return None

    def outputs_intact(self, out_dir: str | Path) -> bool:
        out_dir = Path(out_dir)
        return all((out_dir / rel).is_file() and sha256_file(out_dir / rel) == h
                   for rel, h in self.outputs.items())
