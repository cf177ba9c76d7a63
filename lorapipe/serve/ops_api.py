"""Operations routes: ``/health`` (open) and ``/metrics`` (Prometheus text; admin key when keys are set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lorapipe.serve.auth import Admin
from lorapipe.serve.engine import Engine

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request) -> Any:
    """200 while the scheduler runs, 503 once it stops (shutting down)."""
    engine: Engine = request.app.state.engine
    ok = engine.running
    body = {"status": "ok" if ok else "stopping", "base": engine.base_name, "adapters_loaded": len(engine.loaded())}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request, _: Admin) -> Response:
    """Requests, tokens, latency histograms, resident adapters and swaps."""
    engine: Engine = request.app.state.engine
    return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)
