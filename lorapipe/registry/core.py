"""The adapter registry: immutable, content-addressed ``name@vN`` versions and movable aliases.

Layout under the registry URL (a local directory or any fsspec URL)::

    registry.json                        format marker
    blobs/sha256/ab/abcdef...            every stored file, by content hash (shared by versions)
    versions/<name>/v<N>.json            one immutable version record (see ``push``)
    aliases/<name>/<alias>/<seq>.json    alias log: each promote/rollback is one immutable event

Why it is safe with concurrent writers and kill -9: a push uploads its blobs first (idempotent,
each appears whole or not at all; one already there is re-hashed and replaced if corrupt), then
*claims* the next version number by creating ``v<N>.json`` only if it does not exist
(``O_EXCL``-style link locally, ``If-None-Match: *`` on S3); the loser of a race retries at N+1.
A push killed before the claim leaves only unreferenced blobs and ``.tmp`` files (``gc`` removes
the latter), never a visible version. Aliases are an append-only log claimed the same way, so
concurrent promotes are never lost and ``rollback`` pops the alias back to its previous target.

A push stores only an adapter that passes :func:`lorapipe.adapter_files.verify_adapter_dir`, the
check every load runs; ``verify`` runs it again on the stored copy.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lorapipe.adapter_files import AdapterInvalid, verify_adapter_dir
from lorapipe.errors import RegistryError, RegistryRefError
from lorapipe.manifest import (
    atomic_dir,
    atomic_write_json,
    git_revision,
    package_versions,
    sha256_file,
    sha256_json,
)
from lorapipe.registry.collect import PULLED_RECORD, collect, describe
from lorapipe.registry.diff import diff_records
from lorapipe.registry.refs import (
    DEFAULT_ALIAS,
    LATEST,
    NAME_RE,
    VERSION_RE,
    Ref,
    check_alias,
    check_name,
    parse_ref,
)
from lorapipe.registry.store import UPLOAD_DELAY_ENV, Store, open_store

SCHEMA = 1
MARKER = "registry.json"
VERSION_FILE = PULLED_RECORD  # written by pull next to the materialised files
_MAX_CLAIMS = 1000
_HEADLINE = ("eval_loss", "train_loss", "loss", "perplexity", "eval_perplexity", "win_rate", "mean_score",
             "tuned_exact_match")


_SUBSTANCE_ROLES = ("adapter/", "data/", "inputs/", "code/", "config/config.json", "config/pipeline.yaml")


def _substance(hashes: dict[str, str]) -> dict[str, str]:
    """The files that make a version what it is (for ``push(dedup=True)``)."""
    return {rp: sha for rp, sha in hashes.items() if rp.startswith(_SUBSTANCE_ROLES)}


def default_registry_url() -> str:
    """``$LORAPIPE_REGISTRY``, else ``$XDG_DATA_HOME/lorapipe/registry`` (``~/.local/share/...``)."""
    if url := os.environ.get("LORAPIPE_REGISTRY"):
        return url
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return str(Path(data_home) / "lorapipe" / "registry")


def blob_key(sha: str) -> str:
    return f"blobs/sha256/{sha[:2]}/{sha}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Registry:
    """A registry at ``url``: a local path or an fsspec URL (``s3://bucket/prefix``, ``memory://x``).

    ``storage_options`` go to fsspec (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for MinIO).
    Every method that takes a reference accepts ``name``, ``name@vN``, ``name@latest`` or
    ``name@ALIAS``; see :func:`lorapipe.registry.refs` for the resolution rule.
    """

    def __init__(self, url: str | Path | None = None, storage_options: dict[str, Any] | None = None):
        self.url = str(url or default_registry_url())
        self.store: Store = open_store(self.url, storage_options)
        self._records: dict[Ref, dict[str, Any]] = {}  # versions are immutable, so caching is safe
        self._events_cache: dict[str, dict[str, Any]] = {}  # so are alias events

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    # ------------------------------------------------------------------ listing and resolving
    def names(self) -> list[str]:
        """Adapter names with at least one version."""
        return [n for n in self.store.ls("versions") if NAME_RE.match(n) and self.versions(n)]

    def versions(self, name: str) -> list[int]:
        """Version numbers of ``name``, ascending ([] if none)."""
        out = []
        for f in self.store.ls(f"versions/{name}"):
            stem, _dot, ext = f.partition(".")
            if ext == "json" and (m := VERSION_RE.match(stem)):
                out.append(int(m.group(1)))
        return sorted(out)

    def resolve(self, ref: str | Ref) -> Ref:
        """The exact version a reference means now (plain ``name``: ``prod`` if set, else newest)."""
        if isinstance(ref, Ref):
            ref = str(ref)
        p = parse_ref(ref)
        versions = self.versions(p.name)
        if not versions:
            raise self._unknown_name(ref, p.name)
        if p.version is not None:
            if p.version not in versions:
                raise RegistryRefError(f"`{ref}`: {p.name} has no version v{p.version}; it has "
                                    f"{_span(versions)} (latest v{versions[-1]})")
            return Ref(p.name, p.version)
        if p.latest:
            return Ref(p.name, versions[-1])
        if p.alias is not None:
            target = self.aliases(p.name).get(p.alias)
            if target is None:
                raise RegistryRefError(f"`{ref}`: {p.name} has no alias `{p.alias}`; "
                                    + self._alias_summary(p.name))
            return Ref(p.name, target)
        target = self.aliases(p.name).get(DEFAULT_ALIAS)
        return Ref(p.name, target if target is not None else versions[-1])

    def record(self, ref: str | Ref) -> dict[str, Any]:
        """The stored version record of ``ref`` (a copy is not made: do not mutate it)."""
        r = self.resolve(ref)
        if r not in self._records:
            key = f"versions/{r.name}/v{r.version}.json"
            try:
                self._records[r] = json.loads(self.store.read(key))
            except (ValueError, UnicodeDecodeError) as e:
                raise RegistryError(f"{self.url}/{key}: the record of {r} is not valid JSON ({e}); the "
                                    "registry is damaged, restore this file from a backup") from None
        return self._records[r]

    def show(self, ref: str | Ref) -> dict[str, Any]:
        """The version record of ``ref`` plus ``aliases``: the aliases that point at it now."""
        r = self.resolve(ref)
        rec = dict(self.record(r))
        rec["aliases"] = sorted(a for a, v in self.aliases(r.name).items() if v == r.version)
        return rec

    def ls(self, name: str | None = None) -> list[dict[str, Any]]:
        """Without ``name``: one row per adapter. With it: one row per version, oldest first."""
        if name is None:
            rows = []
            for n in self.names():
                versions, aliases = self.versions(n), self.aliases(n)
                rows.append({"name": n, "versions": len(versions), "latest": f"{n}@v{versions[-1]}",
                             "default": f"{n}@v{aliases.get(DEFAULT_ALIAS, versions[-1])}",
                             "aliases": {a: f"v{v}" for a, v in sorted(aliases.items())}})
            return rows
        versions = self.versions(check_name(name))
        if not versions:
            raise self._unknown_name(name, name)
        aliases = self.aliases(name)
        rows = []
        for v in versions:
            rec = self.record(Ref(name, v))
            flat = _flatten_numbers(rec.get("metrics") or {})
            rows.append({"ref": rec["ref"], "version": v, "created": rec.get("created"),
                         "message": rec.get("message"), "digest": rec.get("digest"),
                         "parent": rec.get("parent"), "source": (rec.get("source") or {}).get("kind"),
                         "base_model": (rec.get("base_model") or {}).get("spec"),
                         "aliases": sorted(a for a, t in aliases.items() if t == v),
                         "metrics": {k: x for k, x in flat.items() if k.rsplit(".", 1)[-1] in _HEADLINE}})
        return rows

    # ------------------------------------------------------------------ push
    def push(self, name: str, source: str | Path, message: str | None = None, parent: str | None = None,
             *, dedup: bool = False, allow_pickle: bool = False, allow_unverified: bool = False) -> str:
        """Store a run directory (``runs/<task>``) or a bare adapter directory as ``name@vN``.

        Returns the new reference. ``parent`` (any reference) records lineage; ``dedup=True`` returns
        the newest version instead of making a new one when its substance is identical: adapter,
        data, inputs, code and config (not the run's timings, logs or answer-cache snapshot).
        The adapter must pass :func:`lorapipe.adapter_files.verify_adapter_dir` (what every load
        checks, with the same two switches), so a tampered, corrupt or pickle adapter is never stored.
        """
        check_name(name)
        parent_ref = str(self.resolve(parent)) if parent else None
        col = collect(source)
        try:
            verify_adapter_dir(col.adapter_dir, allow_pickle=allow_pickle, require_manifest=not allow_unverified)
        except AdapterInvalid as e:
            raise AdapterInvalid(f"not pushed to {self.url}: {e}") from None
        hashes = {rp: sha256_file(p) for rp, p in sorted(col.files.items())}
        digest = sha256_json(hashes)
        if dedup and (versions := self.versions(name)):
            latest = Ref(name, versions[-1])
            if _substance(self.record(latest).get("files") or {}) == _substance(hashes):
                return str(latest)
        body = describe(col, hashes)
        self.store.create(MARKER, json.dumps({"format": "lorapipe-registry", "schema": SCHEMA}).encode())
        first_path = {sha: col.files[rp] for rp, sha in reversed(list(hashes.items()))}
        for sha in sorted(first_path):  # blobs first: nothing refers to them until the claim below
            key = blob_key(sha)
            # a blob already there is re-hashed, not trusted by name: good content replaces (atomically)
            # a corrupt or truncated one instead of a new version pointing at it
            if self._blob_sha256(key) != sha:
                self.store.put_file(first_path[sha], key, sha)
        pushed_with = {"lorapipe": _package_version(), "git_revision": git_revision(), "user": _user()}

        def make(n: int) -> dict[str, Any]:
            return {"schema": SCHEMA, "name": name, "version": n, "ref": f"{name}@v{n}", "created": _now(),
                    "message": message, "parent": parent_ref, "digest": digest, "files": hashes,
                    "sizes": {rp: col.files[rp].stat().st_size for rp in hashes}, **body,
                    "pushed_with": pushed_with}

        n = self._claim(f"versions/{name}", "v{n}.json", lambda: self.versions(name), make)
        return f"{name}@v{n}"

    def _claim(self, prefix: str, pattern: str, existing: Callable[[], list[int]],
               make: Callable[[int], dict[str, Any]]) -> int:
        """Create ``prefix/pattern(n)`` for the smallest free n above the current ones; retry on races."""
        for _ in range(_MAX_CLAIMS):
            n = max(existing(), default=0) + 1
            record = make(n)
            data = (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode()
            if self.store.create(f"{prefix}/{pattern.format(n=n)}", data):
                return n
        raise RegistryError(f"{self.url}/{prefix}: could not claim a new entry after {_MAX_CLAIMS} attempts; "
                            "too many concurrent writers, or the store ignores exclusive creates")

    # ------------------------------------------------------------------ aliases
    def _events(self, name: str, alias: str) -> list[dict[str, Any]]:
        prefix = f"aliases/{name}/{alias}"
        seqs = sorted(int(f[:-5]) for f in self.store.ls(prefix) if f.endswith(".json") and f[:-5].isdigit())
        out = []
        for s in seqs:
            key = f"{prefix}/{s}.json"
            if key not in self._events_cache:  # events never change once written: read each once
                self._events_cache[key] = json.loads(self.store.read(key))
            out.append(self._events_cache[key])
        return out

    @staticmethod
    def _stack(events: list[dict[str, Any]]) -> list[int]:
        stack: list[int] = []
        for ev in events:
            if ev.get("action") == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(int(ev["target"]))
        return stack

    def aliases(self, name: str) -> dict[str, int]:
        """Where each alias of ``name`` points now (alias -> version number)."""
        out = {}
        for alias in self.store.ls(f"aliases/{name}"):
            stack = self._stack(self._events(name, alias))
            if stack:
                out[alias] = stack[-1]
        return out

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Every promote/rollback of ``name@alias``, oldest first."""
        return self._events(check_name(name), check_alias(alias))

    def promote(self, ref: str | Ref, alias: str, message: str | None = None) -> dict[str, Any]:
        """Point ``name@alias`` at the version ``ref`` means now; returns the event (``changed``)."""
        check_alias(alias)
        r = self.resolve(ref)
        return self._move(r.name, alias, "promote", r.version, message)

    def rollback(self, name: str, alias: str, message: str | None = None) -> dict[str, Any]:
        """Move ``name@alias`` back to where it pointed before its last promote; returns the event."""
        check_name(name)
        check_alias(alias)
        if not self.versions(name):
            raise self._unknown_name(f"{name}@{alias}", name)
        return self._move(name, alias, "rollback", None, message)

    def _move(self, name: str, alias: str, action: str, target: int | None, message: str | None) -> dict:
        prefix = f"aliases/{name}/{alias}"
        for _ in range(_MAX_CLAIMS):
            events = self._events(name, alias)
            stack = self._stack(events)
            current = stack[-1] if stack else None
            if action == "rollback":
                if current is None:
                    raise RegistryRefError(f"`{name}@{alias}`: no such alias; " + self._alias_summary(name))
                if len(stack) < 2:
                    raise RegistryError(f"`{name}@{alias}` points at v{current} and has no earlier target to "
                                        f"roll back to; promote another version instead "
                                        f"(`lorapipe registry promote {name}@vN {alias}`)")
                target = stack[-2]
            elif target == current:
                return {"name": name, "alias": alias, "action": action, "target": target,
                        "ref": f"{name}@v{target}", "previous": current, "changed": False}
            seq = max((int(e.get("seq", 0)) for e in events), default=0) + 1
            event = {"name": name, "alias": alias, "action": action, "target": target,
                     "ref": f"{name}@v{target}", "previous": current, "seq": seq, "at": _now(),
                     "message": message, "user": _user()}
            if self.store.create(f"{prefix}/{seq}.json", json.dumps(event, indent=2).encode()):
                return {**event, "changed": True}
        raise RegistryError(f"{self.url}/{prefix}: could not record the alias move after {_MAX_CLAIMS} attempts")

    # ------------------------------------------------------------------ pull, verify, diff
    def pull(self, ref: str | Ref, dest: str | Path, roles: Iterable[str] | None = None,
             overwrite: bool = False) -> Path:
        """Materialise ``ref`` into ``dest`` (``adapter/``, ``data/``, ``config/``, ``report/``, ...
        plus ``version.json``), checking every hash. ``roles`` limits it (e.g. ``["adapter"]``).
        Pulling the same version again is a no-op; ``dest`` is replaced whole, never left half."""
        r = self.resolve(ref)
        rec = self.record(r)
        files: dict[str, str] = rec["files"]
        present = sorted({rp.split("/", 1)[0] for rp in files})
        wanted = sorted(set(roles)) if roles is not None else present
        if unknown := [x for x in wanted if x not in present]:
            raise RegistryRefError(f"{r}: no files with role {', '.join(unknown)}; it has {', '.join(present)}")
        files = {rp: sha for rp, sha in files.items() if rp.split("/", 1)[0] in wanted}
        dest = Path(dest).expanduser()
        if dest.exists():
            if _already_pulled(dest, rec, wanted, files):
                return dest
            if not overwrite and (dest.is_file() or any(dest.iterdir())):
                raise RegistryError(f"{dest}: already exists and holds something else than {r}; pick an "
                                    "empty destination or pass --force (overwrite=True) to replace it")
        with atomic_dir(dest) as tmp:
            for rp, sha in sorted(files.items()):
                self._fetch(r, rp, sha, tmp / rp)
            atomic_write_json(tmp / VERSION_FILE, {**rec, "pulled": {"from": self.url, "roles": wanted,
                                                                     "at": _now()}})
        return dest

    def _fetch(self, r: Ref, rp: str, sha: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store.get_file(blob_key(sha), target)
        except FileNotFoundError:
            raise RegistryError(f"{r}: blob {sha[:12]} of {rp} is missing from {self.url}; the registry is "
                                f"damaged (check it with `lorapipe registry verify {r}`)") from None
        if (actual := sha256_file(target)) != sha:
            raise RegistryError(f"{r}: {rp} is corrupt in {self.url}: blob {sha[:12]} hashes to {actual[:12]}; "
                                f"check it with `lorapipe registry verify {r}`")

    def _blob_sha256(self, key: str) -> str | None:
        """sha256 of the stored blob ``key`` as it is now, None when it is missing."""
        h = hashlib.sha256()
        try:
            with self.store.open(key) as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except FileNotFoundError:
            return None
        return h.hexdigest()

    def verify(self, ref: str | Ref, *, allow_pickle: bool = False, allow_unverified: bool = False) -> dict[str, Any]:
        """Re-hash every blob of ``ref`` and run the adapter check on its adapter files; ``ok`` is False
        and ``problems`` says what is wrong (the flags are :meth:`push`'s)."""
        r = self.resolve(ref)
        rec = self.record(r)
        files: dict[str, str] = rec.get("files") or {}
        problems = []
        if sha256_json(files) != rec.get("digest"):
            problems.append("the record's file list does not match its digest (the record was edited)")
        by_sha: dict[str, list[str]] = {}
        for rp, sha in files.items():
            by_sha.setdefault(sha, []).append(rp)
        for sha, rps in sorted(by_sha.items()):
            actual = self._blob_sha256(blob_key(sha))
            if actual is None:
                problems.append(f"{', '.join(rps)}: blob {sha[:12]} is missing")
            elif actual != sha:
                problems.append(f"{', '.join(rps)}: blob {sha[:12]} is corrupt (hashes to {actual[:12]})")
        if not problems:  # whole blobs: now is the adapter they make up one that a load would accept?
            problems += self._adapter_problems(r, files, allow_pickle, allow_unverified)
        return {"ref": str(r), "ok": not problems, "files": len(files), "blobs": len(by_sha),
                "bytes": sum((rec.get("sizes") or {}).values()), "problems": problems}

    def _adapter_problems(self, r: Ref, files: dict[str, str], allow_pickle: bool,
                          allow_unverified: bool) -> list[str]:
        adapter = {rp: sha for rp, sha in files.items() if rp.startswith("adapter/")}
        with tempfile.TemporaryDirectory(prefix="lorapipe-verify-") as tmp:
            for rp, sha in adapter.items():
                self._fetch(r, rp, sha, Path(tmp) / rp)
            try:
                verify_adapter_dir(Path(tmp) / "adapter", allow_pickle=allow_pickle,
                                   require_manifest=not allow_unverified)
            except AdapterInvalid as e:
                return [str(e).replace(str(Path(tmp) / "adapter"), f"{r}:adapter")]
        return []

    def gc(self, min_age_s: float = 3600.0) -> dict[str, Any]:
        """Remove what killed pushes left behind: ``.tmp`` files and folders untouched for ``min_age_s``
        (younger ones may belong to a push in progress). Returns ``removed`` (their keys) and
        ``unreferenced``: blobs no version refers to (kept: a push in progress may be about to claim them)."""
        removed = self.store.remove_temps(min_age_s)
        referenced = {sha for n in self.names() for v in self.versions(n)
                      for sha in (self.record(Ref(n, v)).get("files") or {}).values()}
        unreferenced = [sha for prefix in self.store.ls("blobs/sha256")
                        for sha in self.store.ls(f"blobs/sha256/{prefix}") if sha not in referenced]
        return {"registry": self.url, "removed": removed, "unreferenced": sorted(unreferenced)}

    def diff(self, ref_a: str | Ref, ref_b: str | Ref) -> dict[str, Any]:
        """What changed from ``ref_a`` to ``ref_b``: ``config`` (dotted keys, old -> new), ``data``
        (rows and hashes), ``metrics`` (with ``delta``), ``files``, and base model/teacher/judge/code."""
        return diff_records(self.record(ref_a), self.record(ref_b))

    # ------------------------------------------------------------------ errors
    def _unknown_name(self, ref: str, name: str) -> RegistryRefError:
        names = self.names()
        if not names:
            return RegistryRefError(f"`{ref}`: the registry {self.url} is empty; push an adapter first "
                                 "(`lorapipe registry push NAME runs/<task>`)")
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return RegistryRefError(f"`{ref}`: no adapter named `{name}` in {self.url}; {hint}known: {shown}")

    def _alias_summary(self, name: str) -> str:
        aliases = self.aliases(name)
        if not aliases:
            return f"it has no aliases yet; set one with `lorapipe registry promote {name}@vN {DEFAULT_ALIAS}`"
        return "its aliases: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items()))


def _already_pulled(dest: Path, rec: dict[str, Any], roles: list[str], files: dict[str, str]) -> bool:
    try:
        have = json.loads((dest / VERSION_FILE).read_text())
    except (OSError, ValueError):
        return False
    sizes = rec.get("sizes") or {}
    return (have.get("ref") == rec.get("ref") and have.get("digest") == rec.get("digest")
            and set(roles) <= set((have.get("pulled") or {}).get("roles") or [])
            and all((dest / rp).is_file() and (dest / rp).stat().st_size == sizes.get(rp, -1) for rp in files))


def _span(versions: list[int]) -> str:
    if versions == list(range(versions[0], versions[-1] + 1)) and len(versions) > 2:
        return f"v{versions[0]}..v{versions[-1]}"
    return ", ".join(f"v{v}" for v in versions)


def _flatten_numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def _package_version() -> str | None:
    return package_versions().get("lorapipe")


__all__ = ["LATEST", "UPLOAD_DELAY_ENV", "Registry", "blob_key", "default_registry_url"]
