"""API keys and tenants.

The keys file (YAML or JSON, ``--keys FILE``) maps each key to a tenant and the adapters it may use;
admin keys are listed apart and may use everything, including the admin API::

    # keys.yaml
    admin_keys: [sk-admin-change-me]
    keys:
      sk-alice-123456:
        tenant: alice
        adapters: [contact, "support-*"]   # `contact` also allows contact@v3, contact@prod
      sk-bob-654321:
        tenant: bob
        adapters: [summarize]
        base: false                        # may not call the bare base model

Without a keys file the server is open: every caller is an anonymous admin.

Fine-tuned models (``ft:{base}:{org}:{suffix}:{id}``, see :mod:`lorapipe.serve.ft_api`) belong to the
tenant named in their org slot: that tenant (and admins) may use them, no pattern needed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorapipe.errors import ConfigError
from lorapipe.serve.schemas import OpenAIError


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, description="Who the key belongs to (shown in logs).")
    adapters: list[str] = Field(default_factory=list,
                                description="Adapter names or glob patterns; `name` also allows `name@...`.")
    base: bool = Field(True, description="May call the base model without an adapter.")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin_keys: list[str] = Field(default_factory=list, description="Keys allowed everything, admin API included.")
    keys: dict[str, KeyEntry] = Field(default_factory=dict, description="Tenant keys.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant with its allowed adapters, or an admin."""

    tenant: str
    admin: bool = False
    adapters: tuple[str, ...] = ()
    base: bool = True

    def may_use(self, model: str, base_name: str) -> bool:
        if self.admin:
            return True
        if model == base_name:
            return self.base
        if model.startswith("ft:"):  # ft:{base}:{org}:{suffix}:{id}: a tenant's own fine-tuned models
            parts = model.split(":")
            return len(parts) == 5 and parts[2] == org_slot(self.tenant)
        family = model.split("@", 1)[0]
        return any(fnmatch.fnmatchcase(model, p) or fnmatch.fnmatchcase(family, p) for p in self.adapters)


OPEN = Principal("anonymous", admin=True)


def org_slot(tenant: str) -> str:
    """A tenant's name as the org slot of its ``ft:`` model names (letters, digits, ``_ . -``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tenant).strip("-")[:64] or "x"


def _digest(key: str) -> str:
    # Lookups go through a hash so the secret keys never sit in a dict compared byte by byte.
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The parsed keys file: key digest -> :class:`Principal`."""

    def __init__(self, principals: dict[str, Principal]):
        self._by_digest = principals

    @classmethod
    def from_dict(cls, data: dict, source: str = "keys") -> KeyStore:
        try:
            parsed = KeysFile.model_validate(data)
        except ValidationError as e:
            problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
            raise ConfigError(f"{source}: invalid keys file", problems) from None
        problems = []
        principals: dict[str, Principal] = {}
        for key in parsed.admin_keys:
            principals[_digest(key)] = Principal("admin", admin=True)
        for key, entry in parsed.keys.items():
            if _digest(key) in principals:
                problems.append(f"keys.{key[:6]}…: the same key is listed twice (or is also an admin key)")
            principals[_digest(key)] = Principal(entry.tenant, adapters=tuple(entry.adapters), base=entry.base)
        for key in [*parsed.admin_keys, *parsed.keys]:
            if len(key) < 12:
                problems.append(f"key {key[:4]}…: shorter than 12 characters; use a long random key")
        if not principals:
            problems.append("no keys: list `admin_keys` and/or `keys` (or start the server without --keys)")
        if problems:
            raise ConfigError(f"{source}: invalid keys file", problems)
        return cls(principals)

    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: keys file not found")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with `admin_keys` and `keys`")
        return cls.from_dict(data, str(path))

    def lookup(self, key: str) -> Principal | None:
        return self._by_digest.get(_digest(key))


def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller's :class:`Principal`, or 401."""
    store: KeyStore | None = request.app.state.settings.keys
    if store is None:
        return OPEN
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise OpenAIError(401, "missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
    who = store.lookup(key.strip())
    if who is None:
        raise OpenAIError(401, "incorrect API key provided", code="invalid_api_key")
    request.state.tenant = who.tenant
    return who


def require_admin(request: Request) -> Principal:
    """FastAPI dependency for the admin API (and /metrics): an admin key, or 403."""
    who = authenticate(request)
    if not who.admin:
        raise OpenAIError(403, f"tenant `{who.tenant}` may not use the admin API; use an admin key",
                          type="permission_error", code="admin_only")
    return who


Authenticated = Annotated[Principal, Depends(authenticate)]  # a route parameter: the caller, or 401
Admin = Annotated[Principal, Depends(require_admin)]  # a route parameter: an admin, or 401/403


def check_model_access(who: Principal, model: str, base_name: str) -> None:
    """403 when ``who`` may not use ``model`` (whether or not it exists, so names do not leak)."""
    if not who.may_use(model, base_name):
        raise OpenAIError(403, f"tenant `{who.tenant}` may not use model `{model}`", type="permission_error",
                          param="model", code="model_not_allowed")
