"""Registry routes: the versions the server serves from ``--registry``, their diff, promote and rollback.

=============================================  =============================================================
``GET /v1/registry``                           every adapter: versions, latest, aliases
``GET /v1/registry/{name}``                    its versions (metrics, lineage, aliases) and alias history
``GET /v1/registry/{name}/versions/{N}``       one version's full record
``GET /v1/registry/{name}/diff?a=vN&b=vM``     what changed between two versions
``POST /v1/registry/{name}/promote``           ``{"version": N, "alias": "prod", "message"}`` (admin)
``POST /v1/registry/{name}/rollback``          ``{"alias": "prod", "message"}`` (admin)
=============================================  =============================================================

Moving an alias is what the server's watch picks up: requests for ``name@alias`` (and a plain
``name`` for ``prod``) go to the new version as soon as it is loaded. Tenants see the adapters they
may use; moving aliases takes an admin key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lorapipe.errors import RegistryError, RegistryRefError
from lorapipe.registry.core import Registry
from lorapipe.registry.refs import DEFAULT_ALIAS, Ref
from lorapipe.serve.auth import Admin, Authenticated, Principal
from lorapipe.serve.registry_source import RegistryAdapterSource
from lorapipe.serve.schemas import OpenAIError

router = APIRouter(prefix="/v1/registry", tags=["registry"])


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="The version to point the alias at.")
    alias: str = Field(DEFAULT_ALIAS, description="The alias to move, e.g. prod or staging.")
    message: str | None = Field(None, description="Why (kept in the alias history).")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(DEFAULT_ALIAS, description="The alias to move back to its previous version.")
    message: str | None = None


def registry_of(source: Any) -> Registry | None:
    """The registry an engine's adapter source serves from (inside a chained source too), or None."""
    if isinstance(source, RegistryAdapterSource):
        return source.registry
    for inner in getattr(source, "sources", None) or ():
        found = registry_of(inner)
        if found is not None:
            return found
    return None


def _registry(request: Request) -> Registry:
    reg = registry_of(request.app.state.engine.source)
    fine_tuning = getattr(request.app.state, "fine_tuning", None)
    if reg is None and fine_tuning is not None:  # no --registry: the one fine-tuning jobs push to
        reg = fine_tuning.registry
    if reg is None:
        raise OpenAIError(404, "this server serves no registry: start it with `lorapipe serve --registry URL`",
                          code="not_found")
    return reg


def _check(request: Request, who: Principal, name: str) -> None:
    if not who.may_use(name, request.app.state.engine.base_name):
        raise OpenAIError(404, f"adapter `{name}` not found in the registry", param="name", code="not_found")


async def _call(fn: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except RegistryError as e:
        # a bad or unknown reference: 404; a move the registry refuses (nothing to roll back to): 409
        raise OpenAIError(404 if isinstance(e, RegistryRefError) else 409, str(e), code="registry_error") from None


@router.get("")
async def list_adapters(request: Request, who: Authenticated) -> Any:
    reg = _registry(request)
    rows = await _call(reg.ls)
    base = request.app.state.engine.base_name
    return {"object": "list", "registry": reg.url, "data": [r for r in rows if who.may_use(r["name"], base)]}


@router.get("/{name}")
async def show_adapter(name: str, request: Request, who: Authenticated) -> Any:
    _check(request, who, name)
    reg = _registry(request)

    def collect() -> dict[str, Any]:
        aliases = reg.aliases(name)
        history = {a: reg.alias_history(name, a) for a in aliases}
        return {"name": name, "versions": reg.ls(name), "aliases": {a: f"v{v}" for a, v in sorted(aliases.items())},
                "alias_history": history}

    return await _call(collect)


@router.get("/{name}/versions/{version}")
async def show_version(name: str, version: int, request: Request, who: Authenticated) -> Any:
    _check(request, who, name)
    return await _call(_registry(request).show, Ref(name, version))


@router.get("/{name}/diff")
async def diff_versions(name: str, a: str, b: str, request: Request, who: Authenticated) -> Any:
    _check(request, who, name)
    return await _call(_registry(request).diff, f"{name}@{a}", f"{name}@{b}")


@router.post("/{name}/promote")
async def promote(name: str, body: PromoteRequest, request: Request, _: Admin) -> Any:
    reg = _registry(request)
    return await _call(reg.promote, Ref(name, body.version), body.alias, body.message)


@router.post("/{name}/rollback")
async def rollback(name: str, body: RollbackRequest, request: Request, _: Admin) -> Any:
    reg = _registry(request)
    return await _call(reg.rollback, name, body.alias, body.message)
