"""Serve adapters straight from a registry: :class:`RegistryAdapterSource` for the server's engine.

It implements :class:`lorapipe.serve.adapters.AdapterSource`:

* ``resolve("contacts@prod")`` resolves the reference *now* (``contacts@v7``), materialises that
  version's ``adapter/`` once under ``cache_dir/<name>/v<N>/`` (hash-checked, atomic) and returns a
  :class:`~lorapipe.serve.adapters.ResolvedAdapter` whose ``version`` and ``token`` are
  ``contacts@v7``;
* ``snapshot()`` maps every served name — ``NAME`` (its ``prod`` alias, else the newest version),
  ``NAME@latest`` and each ``NAME@ALIAS`` — to the version it resolves to now, so a promote,
  rollback or new push changes the token and the server's watch reloads that name;
* ``poll()`` returns only the names whose token changed since the previous ``poll``.

Only listings are repeated on each poll: version records and alias events are immutable and read
once. Pulled versions stay in the cache (an in-flight request may still use the old one); delete
old ``cache_dir/<name>/v<N>`` folders when no server runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorapipe.errors import RegistryError, ServeError
from lorapipe.registry.core import Registry
from lorapipe.registry.refs import DEFAULT_ALIAS, LATEST, parse_ref
from lorapipe.serve.adapters import AdapterNotFound, AdapterRejected, ResolvedAdapter


class RegistryAdapterSource:
    """Adapters from ``registry`` (a :class:`Registry` or its URL), materialised under ``cache_dir``.

    ``names`` limits it to those adapter names (default: every name in the registry);
    ``include_versions`` also lists every ``NAME@vN`` in :meth:`snapshot` (they always resolve).
    """

    def __init__(self, registry: Registry | str | Path, cache_dir: str | Path, *,
                 names: Iterable[str] | None = None, include_versions: bool = False):
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.cache_dir = Path(cache_dir).expanduser()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.names = sorted(set(names)) if names is not None else None
        self.include_versions = include_versions
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._last: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RegistryAdapterSource({self.registry.url!r}, cache_dir={str(self.cache_dir)!r})"

    def resolve(self, name: str) -> ResolvedAdapter:
        """The version ``name`` means now, as a local PEFT directory (pulled on first use)."""
        try:
            if self.names is not None and parse_ref(name).name not in self.names:
                raise AdapterNotFound(f"adapter `{name}` not found: this server serves {', '.join(self.names)} "
                                      f"from {self.registry.url}")
            ref = self.registry.resolve(name)
            record = self.registry.record(ref)
        except RegistryError as e:
            raise AdapterNotFound(f"adapter `{name}` not found: {e}") from None
        except OSError as e:
            raise ServeError(f"registry {self.registry.url}: cannot read it ({e}); check the URL and "
                             "credentials") from None
        dest = self.cache_dir / ref.name / f"v{ref.version}"
        with self._lock(dest):
            try:
                self.registry.pull(ref, dest, roles=["adapter"], overwrite=True)
            except RegistryError as e:
                raise AdapterRejected(f"adapter `{name}` ({ref}): {e}") from None
        meta: dict[str, Any] = {k: record.get(k) for k in ("ref", "digest", "created", "parent", "message",
                                                           "base_model")}
        meta["registry"] = self.registry.url
        return ResolvedAdapter(name, dest / "adapter", str(ref), token=str(ref), meta=meta)

    def snapshot(self) -> dict[str, str]:
        """Every served name -> the ``name@vN`` it resolves to now (the change token)."""
        out: dict[str, str] = {}
        try:
            names = self.registry.names() if self.names is None else self.names
            for name in names:
                versions = self.registry.versions(name)
                if not versions:
                    continue
                aliases = self.registry.aliases(name)
                latest = f"{name}@v{versions[-1]}"
                out[name] = f"{name}@v{aliases[DEFAULT_ALIAS]}" if DEFAULT_ALIAS in aliases else latest
                out[f"{name}@{LATEST}"] = latest
                for alias, v in aliases.items():
                    out[f"{name}@{alias}"] = f"{name}@v{v}"
                if self.include_versions:
                    out.update({f"{name}@v{v}": f"{name}@v{v}" for v in versions})
        except OSError as e:
            raise ServeError(f"registry {self.registry.url}: cannot list it ({e})") from None
        return out

    def poll(self) -> dict[str, str | None]:
        """Names whose target changed since the last poll -> new token (None: no longer served).

        The first call reports every name."""
        now = self.snapshot()
        changed: dict[str, str | None] = {n: t for n, t in now.items() if self._last.get(n) != t}
        changed.update({n: None for n in self._last if n not in now})
        self._last = now
        return changed

    @contextlib.contextmanager
    def _lock(self, dest: Path):
        """One materialisation per version at a time: across threads, and across processes (flock)."""
        with self._locks_guard:
            lock = self._locks.setdefault(dest, threading.Lock())
        dest.parent.mkdir(parents=True, exist_ok=True)
        with lock, open(dest.parent / f".{dest.name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


__all__ = ["RegistryAdapterSource"]
