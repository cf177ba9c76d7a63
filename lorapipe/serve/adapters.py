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

Before a directory is loaded :func:`verify_adapter_dir` checks it: a PEFT LoRA config, safetensors
weights (pickle only when allowed), and every file's sha256 equal to the one in ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lorapipe.errors import ServeError
from lorapipe.manifest import MANIFEST, sha256_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
CONFIG_FILE = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"


class AdapterNotFound(ServeError):
    """No adapter of that name (the HTTP layer answers 404)."""


class InvalidAdapterName(ServeError):
    """A requested name could be a path or is otherwise unsafe (the HTTP layer answers 400)."""


class AdapterRejected(ServeError):
    """An adapter exists but failed a check (hash, format, base model); the message says which."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe adapter name, else raise :class:`InvalidAdapterName`."""
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


@dataclass
class VerifiedAdapter:
    """What :func:`verify_adapter_dir` found: the parsed config, weights file and manifest."""

    path: Path
    config: dict[str, Any]
    weights: Path
    manifest: dict[str, Any] | None

    @property
    def base_identity(self) -> dict[str, Any] | None:
        extra = (self.manifest or {}).get("extra") or {}
        ident = extra.get("base_model")
        return ident if isinstance(ident, dict) else None


def verify_adapter_dir(path: str | Path, *, allow_pickle: bool = False, require_manifest: bool = True,
                       error: type[Exception] = AdapterRejected) -> VerifiedAdapter:
    """Check a PEFT LoRA directory before anything loads it; raise ``error`` naming the problem."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise error(f"{path}: not a PEFT adapter directory (no {CONFIG_FILE})")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        got = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise error(f"{cfg_file}: peft_type is {got!r}; only LoRA adapters (peft_type LORA) are supported")
    if (path / SAFE_WEIGHTS).is_file():
        weights = path / SAFE_WEIGHTS
    elif (path / PICKLE_WEIGHTS).is_file():
        if not allow_pickle:
            raise error(f"{path / PICKLE_WEIGHTS}: pickle weights can run code when loaded; refusing. Convert "
                        "the adapter to safetensors, or pass --allow-pickle if you trust its origin")
        weights = path / PICKLE_WEIGHTS
    else:
        raise error(f"{path}: no adapter weights ({SAFE_WEIGHTS})")
    manifest = None
    if (path / MANIFEST).is_file():
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise error(f"{path / MANIFEST}: not valid JSON ({e}); re-export the adapter") from None
        outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
        if not isinstance(outputs, dict) or not outputs:
            raise error(f"{path / MANIFEST}: has no `outputs` map of file -> sha256; re-export the adapter")
        bad = []
        for rel, digest in sorted(outputs.items()):
            f = path / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                bad.append(f"{rel}: path escapes the adapter directory")
            elif not f.is_file():
                bad.append(f"{rel}: listed in the manifest but missing")
            elif sha256_file(f) != digest:
                bad.append(f"{rel}: sha256 mismatch (manifest {digest[:12]}…, file {sha256_file(f)[:12]}…)")
        for f in (cfg_file, weights):
            if f.name not in outputs:
                bad.append(f"{f.name}: not covered by the manifest")
        if bad:
            raise error(f"{path}: adapter files do not match {MANIFEST} (corrupt or tampered); refusing to "
                        "load it: " + "; ".join(bad))
    elif require_manifest:
        raise error(f"{path}: no {MANIFEST}, so its files cannot be verified; write one with "
                    "lorapipe.manifest.Manifest(...).save(dir), or start the server with --allow-unverified")
    return VerifiedAdapter(path, config, weights, manifest)


def check_base_compatible(adapter: VerifiedAdapter, base_identity: dict[str, Any]) -> None:
    """Refuse an adapter whose manifest says it was trained on different base weights."""
    want = (adapter.base_identity or {}).get("weights_sha256")
    have = base_identity.get("weights_sha256")
    if want and have and want != have:
        raise AdapterRejected(
            f"{adapter.path}: trained on base `{adapter.base_identity.get('spec')}` (weights {want[:12]}…) but "
            f"this server runs `{base_identity.get('spec')}` (weights {have[:12]}…); serve it with that base")


def load_weights(adapter: VerifiedAdapter) -> dict[str, Any]:
    """Read the adapter's tensors (safetensors, or pickle with ``weights_only`` when allowed)."""
    try:
        if adapter.weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(adapter.weights), device="cpu")
        import torch

        return torch.load(adapter.weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, bad header...
        raise AdapterRejected(f"{adapter.weights}: cannot read the weights ({type(e).__name__}: {e})") from None


__all__ = [
    "BASE_ADAPTER",
    "AdapterNotFound",
    "AdapterRejected",
    "AdapterSource",
    "DirectoryAdapterSource",
    "InvalidAdapterName",
    "ResolvedAdapter",
    "VerifiedAdapter",
    "check_base_compatible",
    "content_version",
    "load_weights",
    "stamp",
    "validate_name",
    "verify_adapter_dir",
]
