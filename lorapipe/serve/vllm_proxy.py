"""The thin proxy lorapipe keeps in front of vLLM: keys, adapter names, hot-swap. No inference here.

Per request it
  1. authenticates the caller with the keys file and checks the tenant may use ``model``
     (:mod:`lorapipe.serve.auth`, the same rules and errors as the built-in server);
  2. maps the public name (``contact``, ``contact@v3``, ``contact@prod``) to the name vLLM knows the
     adapter version by, loading that version into vLLM first when it is not there yet;
  3. forwards the body to vLLM with only ``model`` rewritten, and relays the answer, streamed
     (server-sent events) byte for byte.

vLLM names: an adapter given on vLLM's command line keeps its folder name; a version loaded later
is called ``NAME@VERSION`` (``contact@3fa2b1c9d0e1`` for a folder's content hash, ``contact@v7``
from the registry). A public name is re-resolved at most every ``resolve_ttl_s``: when the folder
changed or an alias moved, the new version is loaded (``POST /v1/load_lora_adapter``), requests go
to it, and the old one is unloaded (``POST /v1/unload_lora_adapter``) once its last request ended.

Admin API (admin key): ``POST /admin/adapters {"name", "path"}`` pins ``name`` to that directory (a
hot-swap), ``DELETE /admin/adapters/{name}`` unloads it, ``GET /admin/adapters`` lists the mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from lorapipe.adapter_files import lora_rank, verify_adapter_dir
from lorapipe.serve.adapters import (
    AdapterNotFound,
    AdapterRejected,
    AdapterSource,
    content_version,
    validate_name,
)
from lorapipe.serve.auth import KeyStore, Principal, authenticate, check_model_access, require_admin
from lorapipe.serve.schemas import LoadAdapterRequest, OpenAIError

log = logging.getLogger(__name__)

__all__ = ["ProxySettings", "UpstreamAdapters", "create_proxy_app"]


@dataclass
class ProxySettings:
    upstream: str  # vLLM's root URL, e.g. http://127.0.0.1:8001
    base_name: str  # the base model's public name (vLLM's --served-model-name)
    keys: KeyStore | None = None  # None: open proxy (read by lorapipe.serve.auth.authenticate)
    upstream_api_key: str | None = None  # vLLM's --api-key, if it was started with one
    require_manifest: bool = True
    allow_pickle: bool = False
    max_lora_rank: int | None = None  # what vLLM was started with: larger adapters are refused up front
    resolve_ttl_s: float = 1.0  # how long a name -> version mapping is trusted before re-resolving
    timeout_s: float = 600.0  # one upstream request, streams included


@dataclass
class Route:
    vname: str  # the name vLLM knows this version by
    version: str
    pinned: bool = False  # set by the admin API: not re-resolved from the source
    checked: float = field(default_factory=time.monotonic)


class UpstreamAdapters:
    """Which public name goes to which vLLM adapter, and the load/unload calls that keep vLLM in step."""

    def __init__(self, client: httpx.AsyncClient, settings: ProxySettings, source: AdapterSource | None,
                 preloaded: dict[str, str] | None = None):
        self.client, self.settings, self.source = client, settings, source
        self.routes: dict[str, Route] = {n: Route(n, v) for n, v in (preloaded or {}).items()}
        self.registered: dict[str, str] = dict(preloaded or {})  # vname -> version, as vLLM has them
        self.inflight: Counter[str] = Counter()
        self.retired: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def _headers(self) -> dict[str, str]:
        key = self.settings.upstream_api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    # ------------------------------------------------------------------ requests
    async def acquire(self, name: str) -> str:
        """The vLLM name to send a request for ``name`` to; counts the request as in flight."""
        validate_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            route = self.routes.get(name)
            stale = route is None or (not route.pinned and
                                      time.monotonic() - route.checked >= self.settings.resolve_ttl_s)
            if stale:
                if self.source is None:
                    raise AdapterNotFound(f"adapter `{name}` not found: no adapter source; load it with "
                                          "POST /admin/adapters")
                try:
                    resolved = await run_in_threadpool(self.source.resolve, name)
                except AdapterNotFound:
                    if route is not None:  # its folder is gone (or the alias was deleted): vLLM drops it too
                        del self.routes[name]
                        await self._retire(route.vname)
                    raise
                if route is not None and route.version == resolved.version:
                    route.checked = time.monotonic()
                else:
                    vname = await self._ensure(name, resolved.path, resolved.version)
                    await self._switch(name, Route(vname, resolved.version))
            vname = self.routes[name].vname
            self.inflight[vname] += 1
            return vname

    async def release(self, vname: str) -> None:
        self.inflight[vname] -= 1
        if self.inflight[vname] <= 0:
            del self.inflight[vname]
            if vname in self.retired:
                await self._retire(vname)

    # ------------------------------------------------------------------ admin
    async def load(self, name: str, path: str | Path) -> Route:
        """Pin ``name`` to the adapter in ``path`` (verified, then loaded into vLLM): a hot-swap."""
        validate_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            version = await run_in_threadpool(content_version, Path(path))
            vname = await self._ensure(name, Path(path), version)
            route = Route(vname, version, pinned=True)
            await self._switch(name, route)
            return route

    async def unload(self, name: str) -> None:
        validate_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            route = self.routes.pop(name, None)
            if route is None:
                raise AdapterNotFound(f"adapter `{name}` is not loaded")
            await self._retire(route.vname)

    # ------------------------------------------------------------------ vLLM calls
    async def _ensure(self, name: str, path: Path, version: str) -> str:
        """The vLLM name of this version, loading it into vLLM unless it is there already."""
        for vname, v in self.registered.items():
            if v == version and vname not in self.retired:
                return vname
        family = name.split("@", 1)[0]
        vname = version if version.startswith(f"{family}@") else f"{family}@{version}"
        await run_in_threadpool(self._verify, path)
        r = await self.client.post("/v1/load_lora_adapter", json={"lora_name": vname, "lora_path": str(path)},
                                   headers=self._headers())
        if r.status_code != 200 and "already" not in r.text:
            raise OpenAIError(502 if r.status_code >= 500 else 400,
                              f"vLLM refused adapter `{name}` ({path}): {r.text.strip()[:500]}",
                              type="server_error", param="model", code="adapter_rejected")
        self.registered[vname] = version
        self.retired.discard(vname)
        log.info("vLLM: loaded %s as `%s`", path, vname)
        return vname

    def _verify(self, path: Path) -> None:
        verified = verify_adapter_dir(path, allow_pickle=self.settings.allow_pickle,
                                      require_manifest=self.settings.require_manifest, error=AdapterRejected)
        rank, most = lora_rank(verified.config), self.settings.max_lora_rank
        if most is not None and rank > most:
            raise AdapterRejected(f"{path}: LoRA rank {rank} exceeds --max-lora-rank {most} that vLLM was started "
                                  "with; restart `lorapipe serve --engine vllm` with this adapter in --adapters "
                                  "(the rank is taken from the adapters present at start)")

    async def _switch(self, name: str, route: Route) -> None:
        old = self.routes.get(name)
        self.routes[name] = route
        if old is not None and old.vname != route.vname:
            await self._retire(old.vname)

    async def _retire(self, vname: str) -> None:
        """Unload ``vname`` from vLLM once no route points at it and no request runs on it."""
        if any(r.vname == vname for r in self.routes.values()):
            self.retired.discard(vname)
            return
        if self.inflight.get(vname):
            self.retired.add(vname)  # release() comes back here after the last request
            return
        self.retired.discard(vname)
        if self.registered.pop(vname, None) is None:
            return
        try:
            r = await self.client.post("/v1/unload_lora_adapter", json={"lora_name": vname}, headers=self._headers())
            if r.status_code != 200:
                log.warning("vLLM: unloading `%s` answered %d: %s", vname, r.status_code, r.text[:300])
            else:
                log.info("vLLM: unloaded `%s`", vname)
        except httpx.HTTPError as e:
            log.warning("vLLM: unloading `%s` failed: %s", vname, e)


# ---------------------------------------------------------------------------------- routes
router = APIRouter()


def _state(request: Request) -> tuple[ProxySettings, UpstreamAdapters, httpx.AsyncClient]:
    s = request.app.state
    return s.settings, s.adapters, s.client


async def _forward(request: Request, who: Principal, path: str) -> Response:
    settings, adapters, client = _state(request)
    try:
        body = await request.json()
    except ValueError:
        raise OpenAIError(400, "the body must be JSON") from None
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "invalid request: `model`: a model name is required", param="model")
    check_model_access(who, model, settings.base_name)
    vname = None if model == settings.base_name else await adapters.acquire(model)
    body["model"] = vname or settings.base_name
    headers = {"Content-Type": "application/json", **adapters._headers()}
    try:
        resp = await client.send(client.build_request("POST", path, json=body, headers=headers), stream=True)
    except httpx.HTTPError as e:
        if vname:
            await adapters.release(vname)
        raise OpenAIError(502, f"vLLM at {settings.upstream} did not answer ({type(e).__name__}); is it running?",
                          type="server_error", code="upstream_unavailable") from None

    async def done() -> None:
        await resp.aclose()
        if vname:
            await adapters.release(vname)

    media = resp.headers.get("content-type", "application/json")
    if body.get("stream") and resp.status_code == 200:
        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_bytes():
                    yield chunk
            finally:  # also when the client goes away: the stream upstream is closed, vLLM stops
                await done()

        return StreamingResponse(relay(), status_code=200, media_type=media,
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        content = await resp.aread()
    finally:
        await done()
    return Response(content, status_code=resp.status_code, media_type=media)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, who: Principal = Depends(authenticate)) -> Response:
    """OpenAI chat completions, answered by vLLM (streamed when ``stream`` is true)."""
    return await _forward(request, who, "/v1/chat/completions")


@router.post("/v1/completions")
async def completions(request: Request, who: Principal = Depends(authenticate)) -> Response:
    """OpenAI text completions, answered by vLLM."""
    return await _forward(request, who, "/v1/completions")


@router.get("/v1/models")
async def list_models(request: Request, who: Principal = Depends(authenticate)) -> Any:
    """The base model and the adapters the caller may use."""
    settings, adapters, _ = _state(request)
    names = set(adapters.routes)
    if adapters.source is not None:
        names |= set(await run_in_threadpool(adapters.source.snapshot))
    data = []
    if who.may_use(settings.base_name, settings.base_name):
        data.append({"id": settings.base_name, "object": "model", "owned_by": "lorapipe", "root": settings.base_name,
                     "parent": None})
    for name in sorted(names):
        if who.may_use(name, settings.base_name):
            route = adapters.routes.get(name)
            data.append({"id": name, "object": "model", "owned_by": "lorapipe", "root": name,
                         "parent": settings.base_name, "loaded": route is not None,
                         "version": route.version if route else None})
    return {"object": "list", "data": data}


@router.get("/admin/adapters")
async def admin_list(request: Request, _: Principal = Depends(require_admin)) -> Any:
    """Public name -> the vLLM adapter and version it goes to."""
    _, adapters, _ = _state(request)
    return {"loaded": {n: r.version for n, r in adapters.routes.items()},
            "upstream_names": {n: r.vname for n, r in adapters.routes.items()},
            "engine": "vllm"}


@router.post("/admin/adapters")
async def admin_load(body: LoadAdapterRequest, request: Request, _: Principal = Depends(require_admin)) -> Any:
    """Load or replace an adapter from a directory on this machine (vLLM must see the same path)."""
    _, adapters, _ = _state(request)
    try:
        route = await adapters.load(body.name, body.path)
    except AdapterRejected as e:
        raise OpenAIError(400, str(e), param="path", code="adapter_rejected") from None
    return {"name": body.name, "version": route.version, "loaded": True, "upstream_name": route.vname}


@router.delete("/admin/adapters/{name}")
async def admin_unload(name: str, request: Request, _: Principal = Depends(require_admin)) -> Any:
    """Unload an adapter (from vLLM once its running requests finish)."""
    _, adapters, _ = _state(request)
    await adapters.unload(name)
    return {"name": name, "loaded": False}


@router.get("/health")
async def health(request: Request) -> Any:
    """200 when vLLM answers its /health, else 503."""
    settings, _, client = _state(request)
    try:
        ok = (await client.get("/health", timeout=5)).status_code == 200
    except httpx.HTTPError:
        ok = False
    return JSONResponse({"status": "ok" if ok else "upstream_down", "engine": "vllm", "base": settings.base_name},
                        status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request, _: Principal = Depends(require_admin)) -> Response:
    """vLLM's Prometheus metrics, passed through (admin key when keys are set)."""
    _, adapters, client = _state(request)
    r = await client.get("/metrics", headers=adapters._headers())
    return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))


def create_proxy_app(settings: ProxySettings, *, source: AdapterSource | None = None,
                     preloaded: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                     ) -> FastAPI:
    """The proxy app. ``preloaded``: adapters vLLM was started with (name -> content version)."""
    from lorapipe.serve.app import _install_error_handlers

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=settings.upstream, transport=transport, limits=limits,
                                     timeout=httpx.Timeout(settings.timeout_s, connect=10)) as client:
            app.state.client = client
            app.state.adapters = UpstreamAdapters(client, settings, source, preloaded)
            yield

    app = FastAPI(title="lorapipe (vLLM)", summary="lorapipe keys and adapter names in front of vLLM.",
                  lifespan=lifespan)
    app.state.settings = settings
    _install_error_handlers(app)
    app.include_router(router)
    return app
