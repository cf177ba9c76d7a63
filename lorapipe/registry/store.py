"""Where registry bytes live: a local directory, or any fsspec URL (``s3://``, ``gs://``, ``memory://``).

A store offers the few primitives the registry is built on. Two matter for correctness:

* :meth:`create` writes a small object **only if it does not exist yet**, atomically, and tells the
  caller whether it won. Locally: write a temp file, then ``os.link`` it to the final name (link
  fails if the name exists, and readers never see a half-written file). On S3: a conditional
  ``PutObject`` with ``If-None-Match: *`` (``fs.pipe_file(..., mode="create")`` in s3fs).
* :meth:`put_file` makes a blob appear whole or not at all: locally temp + ``os.replace``; on an
  object store an upload only becomes visible once it completes.

Other fsspec backends fall back to fsspec's ``mode="create"``, which some implement as
check-then-write; concurrent pushes are only guaranteed distinct on local disks and S3.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Protocol

from lorapipe.errors import RegistryError
from lorapipe.manifest import umask_mode

_CHUNK = 1 << 20
# Test hook: seconds to sleep after each uploaded chunk (local) or before each upload (fsspec), so a
# test can kill -9 a push in the middle of writing a blob. Never set it otherwise.
UPLOAD_DELAY_ENV = "LORAPIPE_REGISTRY_UPLOAD_DELAY"


def _upload_delay() -> None:
    if delay := float(os.environ.get(UPLOAD_DELAY_ENV) or 0):
        time.sleep(delay)


class Store(Protocol):
    url: str

    def read(self, key: str) -> bytes: ...
    def open(self, key: str) -> IO[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def ls(self, prefix: str) -> list[str]: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def put_file(self, local: Path, key: str, sha256: str) -> None: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def remove_temps(self, min_age_s: float) -> list[str]: ...


def _visible(name: str) -> bool:
    # temp files of interrupted writes start with "." and must never be taken for content
    return bool(name) and not name.startswith(".")


class LocalStore:
    """A registry in a local (or network-mounted POSIX) directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _p(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes:
        return self._p(key).read_bytes()

    def open(self, key: str) -> IO[bytes]:
        return open(self._p(key), "rb")

    def exists(self, key: str) -> bool:
        return self._p(key).exists()

    def ls(self, prefix: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._p(prefix)) if _visible(n))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def create(self, key: str, data: bytes) -> bool:
        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, umask_mode())  # readable as the umask says, not mkstemp's owner-only
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if another writer got there first
            except FileExistsError:
                return False
            _fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_file(self, local: Path, key: str, sha256: str) -> None:
        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                while block := src.read(_CHUNK):
                    h.update(block)
                    out.write(block)
                    _upload_delay()
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha256:
                raise RegistryError(f"{local}: the file changed while it was being pushed "
                                    f"(sha256 {sha256[:12]} -> {h.hexdigest()[:12]}); push again once "
                                    "nothing writes to it")
            os.chmod(tmp, umask_mode(0o444))  # blobs are immutable
            os.replace(tmp, path)  # atomic, also over a corrupt blob of the same name
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get_file(self, key: str, local: Path) -> None:
        shutil.copyfile(self._p(key), local)

    def remove_temps(self, min_age_s: float) -> list[str]:
        """Delete the ``.*.tmp`` files and folders that killed writes left, untouched for ``min_age_s``
        (a younger one may belong to a push in progress); return their keys."""
        removed, now = [], time.time()
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in sorted([*dirnames, *filenames]):
                p = Path(dirpath) / name
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - p.lstat().st_mtime < min_age_s:
                        continue
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                        dirnames.remove(name)
                    else:
                        p.unlink()
                    removed.append(p.relative_to(self.root).as_posix())
        return removed


class FsspecStore:
    """A registry under any fsspec URL; ``storage_options`` go to the filesystem (credentials,
    ``client_kwargs={"endpoint_url": ...}`` for S3-compatible servers, ...)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self._p(key))

    def open(self, key: str) -> IO[bytes]:
        return self.fs.open(self._p(key), "rb")

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._p(key))

    def ls(self, prefix: str) -> list[str]:
        path = self._p(prefix).rstrip("/")
        # listings are cached by s3fs and friends; another process may have added entries since
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted(n for n in names if _visible(n))

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._p(key), data, mode="create")
        except FileExistsError:
            return False
        except OSError as e:
            # some s3fs versions map a failed If-None-Match to a bare EINVAL/EIO
            if "precondition" in str(e).lower():
                return False
            raise
        return True

    def put_file(self, local: Path, key: str, sha256: str) -> None:
        # an object upload (multipart too) only becomes visible when it completes
        _upload_delay()
        self.fs.put_file(str(local), self._p(key))

    def get_file(self, key: str, local: Path) -> None:
        self.fs.get_file(self._p(key), str(local))

    def remove_temps(self, min_age_s: float) -> list[str]:
        # object uploads are never visible half-done: there are no temp objects to remove (abandoned
        # multipart uploads are the bucket's lifecycle rules' job)
        return []


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_store(url: str | Path, storage_options: dict[str, Any] | None = None) -> Store:
    """A :class:`LocalStore` for plain paths and ``file://`` URLs, else a :class:`FsspecStore`."""
    s = str(url)
    if "://" not in s:
        return LocalStore(s)
    if s.startswith("file://"):
        return LocalStore(s[len("file://"):])
    try:
        return FsspecStore(s, storage_options)
    except (ImportError, ValueError) as e:
        raise RegistryError(f"registry {s}: cannot open this URL ({e}); install the fsspec backend for "
                            "it (e.g. `pip install s3fs` for s3://) or use a local path") from None
