"""Adapter references: ``name``, ``name@vN``, ``name@latest``, ``name@ALIAS``.

Resolution rule (also in the CLI help): ``name@vN`` is that exact, immutable version;
``name@latest`` is the newest version; ``name@ALIAS`` is where the alias points now; a plain
``name`` is the ``prod`` alias when one is set, otherwise the newest version — so a server asked for
``name`` serves what was promoted to production, and a registry without aliases still works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorapipe.errors import RegistryRefError

DEFAULT_ALIAS = "prod"
LATEST = "latest"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^v([0-9]+)$")
REF_HELP = "use NAME, NAME@vN, NAME@latest or NAME@ALIAS (e.g. contacts@v3, contacts@prod)"


@dataclass(frozen=True, order=True)
class Ref:
    """A resolved reference: one immutable version. ``str(ref)`` is ``name@vN``."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass(frozen=True)
class ParsedRef:
    """A reference as written: ``selector`` is None (plain name), ``vN``, ``latest`` or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None
    latest: bool = False


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RegistryRefError(f"`{name}`: not a valid adapter name; use 1-128 letters, digits, `_`, `.` or `-`, "
                            "starting with a letter or digit (e.g. contacts, invoice-extract)")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or VERSION_RE.match(alias) or alias == LATEST:
        raise RegistryRefError(f"`{alias}`: not a valid alias; use a word starting with a letter (e.g. prod, "
                            f"staging, canary); `vN` and `{LATEST}` are reserved")
    return alias


def parse_ref(ref: str) -> ParsedRef:
    """Split ``name@selector``; raise :class:`RegistryError` naming the reference if it is malformed."""
    if not isinstance(ref, str) or not ref.strip():
        raise RegistryRefError(f"`{ref}`: empty adapter reference; {REF_HELP}")
    name, sep, sel = ref.strip().partition("@")
    if not NAME_RE.match(name) or (sep and not sel) or "@" in sel:
        raise RegistryRefError(f"`{ref}`: not a valid adapter reference; {REF_HELP}")
    if not sep:
        return ParsedRef(name)
    if m := VERSION_RE.match(sel):
        if int(m.group(1)) < 1:
            raise RegistryRefError(f"`{ref}`: versions start at v1; {REF_HELP}")
        return ParsedRef(name, version=int(m.group(1)))
    if sel == LATEST:
        return ParsedRef(name, latest=True)
    if not ALIAS_RE.match(sel):
        raise RegistryRefError(f"`{ref}`: `{sel}` is neither a version (vN) nor an alias; {REF_HELP}")
    return ParsedRef(name, alias=sel)
