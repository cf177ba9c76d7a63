"""The FastAPI application: ``create_app(settings, engine)`` wires the routers, errors and metrics.

Every error is answered in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``:

=======================================  ======  =======================
cause                                    status  code
=======================================  ======  =======================
malformed body / failed validation       400     invalid_request_error
missing or wrong API key                 401     invalid_api_key
another tenant's adapter, admin API      403     model_not_allowed / admin_only
unknown model or route                   404     model_not_found / not_found
body over ``max_request_bytes``           413     request_too_large
prompt longer than the context           400     context_length_exceeded
adapter refused (hash mismatch, format)  500     adapter_rejected
queue full past ``queue_timeout_s``       503     queue_timeout (with Retry-After)
server shutting down                     503     shutting_down
anything else                            500     internal_error
=======================================  ======  =======================

The engine's life follows the app's: the lifespan starts the scheduler (and the directory watch)
and, on shutdown, waits for queued and running generations to finish before stopping it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorapipe.errors import LorapipeError
from lorapipe.serve.adapters import AdapterNotFound, AdapterRejected, InvalidAdapterName
from lorapipe.serve.auth import KeyStore
from lorapipe.serve.engine import Engine, EngineClosed
from lorapipe.serve.schemas import OpenAIError

log = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """How the app behaves; the engine holds the model-side settings."""

    keys: KeyStore | None = None  # None: open server
    watch_interval_s: float | None = 1.0  # poll the adapter source; None: no watch
    default_max_tokens: int = 256  # when a chat request gives no max_tokens
    shutdown_timeout_s: float = 30.0  # how long shutdown waits for running generations
    max_request_bytes: int | None = 4 * 1024 * 1024  # larger bodies get a 413 before they are read; None: no limit
    # a stream with nothing to send for this long sends an SSE comment (clients ignore it), so a client's
    # read timeout tells a dead server from one that is busy prefilling; None: never
    keepalive_s: float | None = 5.0
    runs_dir: Path | None = None  # run folders for /v1/runs and the UI (`--runs DIR`); None: no runs API
    # the Files and fine-tuning jobs API (lorapipe.serve.ft_worker.FineTuning); None: not served
    fine_tuning: Any = None
    max_upload_bytes: int | None = 512 * 1024 * 1024  # POST /v1/files bodies (training files) may be this large


def _error(e: OpenAIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers or None)


def _translate(exc: Exception) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, AdapterNotFound):
        # the source's message may name a folder or a registry URL: the log gets it, tenants do not
        log.info("%s", exc)
        public = str(exc).split(": ", 1)[0].split("; ", 1)[0]
        return OpenAIError(404, f"{public}; GET /v1/models lists the models you can use", param="model",
                           code="model_not_found")
    if isinstance(exc, AdapterRejected):
        return OpenAIError(500, str(exc), type="server_error", param="model", code="adapter_rejected")
    if isinstance(exc, EngineClosed):
        return OpenAIError(503, str(exc), type="server_error", code="shutting_down")
    if isinstance(exc, InvalidAdapterName):
        return OpenAIError(400, str(exc), param="model", code="invalid_model")
    if isinstance(exc, LorapipeError):
        return OpenAIError(500, str(exc), type="server_error", code="internal_error")
    return OpenAIError(500, f"internal error ({type(exc).__name__}); see the server log", type="server_error",
                       code="internal_error")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        where = f"`{param}`: " if param else ""
        return _error(OpenAIError(400, f"invalid request: {where}{msg}", param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return _error(OpenAIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        err = _translate(exc)
        if err.status >= 500 and not isinstance(exc, (LorapipeError, OpenAIError)):
            log.exception("unhandled error", exc_info=exc)
        return _error(err)

    for cls in (OpenAIError, LorapipeError):
        app.add_exception_handler(cls, _any)


class _MetricsMiddleware:
    """Count requests and time them to their *last* byte (streams included), per route and model."""

    def __init__(self, app: Any, engine: Engine):
        self.app, self.engine = app, engine

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            model = (scope.get("state") or {}).get("model", "-")
            m = self.engine.metrics
            m.requests.labels(endpoint, model, str(status["code"])).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)


class _BodyLimitMiddleware:
    """413 for a body over ``limit`` bytes: at once when Content-Length says so, else as soon as the
    streamed body passes the limit, so a huge body is never read into memory nor parsed."""

    def __init__(self, app: Any, limit: int | None, upload_limit: int | None = None):
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    def _error(self, limit: int | None) -> StarletteHTTPException:
        return StarletteHTTPException(413, f"the request body is over this server's limit of {limit} bytes "
                                      "(serve.max_request_bytes); send a smaller request")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # file uploads (training files) have their own, larger limit
        limit = self.upload_limit if scope.get("path") == "/v1/files" else self.limit
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            e = _error(OpenAIError(413, str(self._error(limit).detail), code="request_too_large"))
            e.headers["Connection"] = "close"  # the unread body must not be taken for the next request
            await e(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._error(limit)
            return message

        await self.app(scope, limited, send)


def create_app(settings: ServeSettings, engine: Engine) -> FastAPI:
    """Build the server around a ready :class:`Engine` (started and stopped by the app's lifespan)."""
    from lorapipe.serve import admin_api, openai_api, ops_api, registry_api, runs_api, ui
    from lorapipe.serve.runs import RunStore
    from lorapipe.serve.watch import AdapterWatcher

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if settings.fine_tuning is not None:
            settings.fine_tuning.start()
        watcher = None
        if settings.watch_interval_s and engine.source is not None:
            watcher = AdapterWatcher(engine, engine.source, settings.watch_interval_s).start()
        app.state.watcher = watcher
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            import anyio.to_thread

            if settings.fine_tuning is not None:  # a running job's child stops; the job resumes on restart
                await anyio.to_thread.run_sync(settings.fine_tuning.stop)

            # finish what is queued and running; uvicorn has already stopped accepting connections
            await anyio.to_thread.run_sync(engine.shutdown, settings.shutdown_timeout_s)

    app = FastAPI(title="lorapipe", summary="OpenAI-compatible server: one base model, many LoRA adapters.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.started = int(time.time())
    app.state.runs = RunStore(settings.runs_dir) if settings.runs_dir is not None else None
    _install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(admin_api.router)
    app.include_router(ops_api.router)
    app.include_router(runs_api.router)
    app.include_router(registry_api.router)
    app.include_router(ui.router)  # the browser UI at /ui calls the routers above, like any client
    if settings.fine_tuning is not None:
        from lorapipe.serve import files_api, ft_api

        app.state.fine_tuning = settings.fine_tuning.attach(engine)
        app.include_router(files_api.router)
        app.include_router(ft_api.router)
    app.add_middleware(_BodyLimitMiddleware, limit=settings.max_request_bytes, upload_limit=settings.max_upload_bytes)
    app.add_middleware(_MetricsMiddleware, engine=engine)  # added last: outermost, so it counts the 413s too
    return app
