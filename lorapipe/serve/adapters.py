"""Where served adapters come from, and the checks an adapter directory must pass before it loads.

The engine never reads a folder layout or a registry itself; it asks an :class:`AdapterSource`:

* ``resolve(name)`` turns a public name (``contact``, ``contact@v3``, ``contact@prod``) into a
  :class:`ResolvedAdapter` — a PEFT directory plus the identity of its content — or raises
  :class:`AdapterNotFound`;
* ``snapshot()`` lists the names it serves right now, each with a *token* that changes whenever the
  content behind the name changes (a new version, an alias that moved). The directory watch polls it
  and replaces, loads or unloads adapters when a token changes, appears or disappears.

:class:`DirectoryAdapterSource` serves every subfolder of one directory (name = folder name). A
registry implements the same two methods to serve ``name@vN`` and ``name@alias``.

Before a directory is loaded :func:`lorapipe.adapter_files.verify_adapter_dir` checks it: a PEFT
LoRA config, safetensors weights (pickle only when allowed), and every file's sha256 equal to the one
in ``manifest.json``; the names below raise :class:`AdapterRejected` instead of ``AdapterInvalid``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lorapipe import adapter_files
from lorapipe.adapter_files import CONFIG_FILE, PICKLE_WEIGHTS, SAFE_WEIGHTS
from lorapipe.decoding.batch import BASE_ADAPTER  # PEFT's name for "no adapter" in a mixed batch
from lorapipe.errors import ServeError
from lorapipe.manifest import MANIFEST, sha256_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
FT_NAME_RE = re.compile(r"^ft:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]*:[A-Za-z0-9]+(:ckpt-step-[0-9]+)?$")


class AdapterNotFound(ServeError):
    """No adapter of that name (the HTTP layer answers 404)."""


class InvalidAdapterName(ServeError):
    """A requested name could be a path or is otherwise unsafe (the HTTP layer answers 400)."""


class AdapterRejected(ServeError):
    """An adapter exists but failed a check (hash, format, base model); the message says which."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe adapter name, else raise :class:`InvalidAdapterName`."""
    if isinstance(name, str) and len(name) <= 256 and FT_NAME_RE.match(name):  # fine-tuned: never a path
        return name
    if not isinstance(name, str) or len(name) > 128 or not NAME_RE.match(name) or ".." in name:
        raise InvalidAdapterName(f"adapter name {name!r} is invalid: use at most 128 letters, digits and `_ . @ -`, "
                         "starting with a letter or digit, without `..`")
    return name


@dataclass(frozen=True)
class ResolvedAdapter:
    """One concrete adapter version, as a source hands it to the engine."""

    name: str  # the public name it was asked for ("contact", "contact@v3", "contact@prod")
    path: Path  # a PEFT directory: adapter_config.json, adapter_model.safetensors, manifest.json
    version: str  # identity of the content, reported to clients as `system_fingerprint`
    token: str = ""  # change-detection token (see AdapterSource.snapshot); defaults to `version`
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form, e.g. registry lineage


@runtime_checkable
class AdapterSource(Protocol):
    """What the engine needs from a directory of adapters or a registry."""

    def resolve(self, name: str) -> ResolvedAdapter:
        """The adapter currently behind ``name``; raise :class:`AdapterNotFound` if there is none."""
        ...

    def snapshot(self) -> dict[str, str]:
        """Every name served now -> a token that changes whenever its content changes. Cheap: polled."""
        ...


class DirectoryAdapterSource:
    """Each subfolder of ``root`` holding an ``adapter_config.json`` is one adapter named after it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServeError(f"{self.root}: adapter directory not found; create it or pass --adapters DIR")

    def _dir(self, name: str) -> Path:
        validate_name(name)
        path = self.root / name
        if not (path / CONFIG_FILE).is_file():
            raise AdapterNotFound(f"adapter `{name}` not found: no {self.root / name / CONFIG_FILE}")
        return path

    def resolve(self, name: str) -> ResolvedAdapter:
        path = self._dir(name)
        return ResolvedAdapter(name, path, content_version(path), token=stamp(path))

    def snapshot(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.root.iterdir()):
            # hidden folders are atomic_dir temporaries or the old copy being replaced; never serve them
            if p.name.startswith(".") or not NAME_RE.match(p.name) or not (p / CONFIG_FILE).is_file():
                continue
            out[p.name] = stamp(p)
        return out


class ChainedAdapterSource:
    """Several sources served as one (``--adapters DIR`` and ``--registry URL`` together): a name
    resolves in the first source that has it; the listing is their union, the first source winning."""

    def __init__(self, sources: list[AdapterSource]):
        if not sources:
            raise ServeError("no adapter source: pass --adapters DIR and/or --registry URL")
        self.sources = list(sources)

    def resolve(self, name: str) -> ResolvedAdapter:
        missing = []
        for source in self.sources:
            try:
                return source.resolve(name)
            except AdapterNotFound as e:
                missing.append(str(e))
        raise AdapterNotFound("; ".join(missing))

    def snapshot(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for source in reversed(self.sources):
            out.update(source.snapshot())
        return out


def stamp(path: Path) -> str:
    """Cheap change token: names, sizes and mtimes of the folder's files (no hashing)."""
    h = hashlib.sha256()
    try:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    except FileNotFoundError:  # the folder is being replaced right now; the next poll sees the result
        h.update(b"in-flux")
    return h.hexdigest()[:16]


def content_version(path: Path) -> str:
    """Identity of an adapter's content: sha256 of its manifest (which hashes every file) or weights."""
    for f in (path / MANIFEST, path / SAFE_WEIGHTS, path / PICKLE_WEIGHTS):
        if f.is_file():
            return sha256_file(f)[:12]
    return "unknown"


# The adapter-directory check lives in lorapipe.adapter_files (every load and push runs it); the server's
# flavour raises AdapterRejected, which the HTTP layer answers as a refused adapter.
verify_adapter_dir = partial(adapter_files.verify_adapter_dir, error=AdapterRejected)
check_base_compatible = partial(adapter_files.check_base_compatible, error=AdapterRejected)
load_weights = partial(adapter_files.load_weights, error=AdapterRejected)


__all__ = [
    "BASE_ADAPTER",
    "AdapterNotFound",
    "AdapterRejected",
    "AdapterSource",
    "DirectoryAdapterSource",
    "InvalidAdapterName",
    "ResolvedAdapter",
    "check_base_compatible",
    "content_version",
    "load_weights",
    "stamp",
    "validate_name",
    "verify_adapter_dir",
]
