"""Runs routes: the pipeline's run folders over HTTP (the browser UI reads these; so can anyone with a key).

=====================================  ====================================================================
``GET /v1/runs``                       every run: status, stage status (ran/skipped/failed/running), timings
``GET /v1/runs/{id}``                  one run plus its config, data card, stage metrics and A/B verdict
``GET /v1/runs/{id}/report``           its ``evaluate/report.html``
``GET /v1/runs/{id}/events``           ``events.jsonl`` as Server-Sent Events (``id:`` = the event's seq);
                                       ``Last-Event-ID`` (or ``?after=``) resumes after that seq;
                                       ``?follow=false`` ends after the events written so far
``GET /v1/runs/{id}/rows``             one page of rows: ``kind`` (generated, kept, rejected, train, eval),
                                       ``origin``, ``min_score``, ``max_score``, ``reason``, ``q``,
                                       ``offset``, ``limit``; with the total and the facets
=====================================  ====================================================================

A tenant sees the runs named after an adapter it may use; an admin (or an open server) sees all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from lorapipe.events import EVENTS_FILE
from lorapipe.serve.auth import Authenticated, Principal
from lorapipe.serve.runs import EventTail, RowQuery, RunStore
from lorapipe.serve.schemas import OpenAIError

router = APIRouter(prefix="/v1/runs", tags=["runs"])
MAX_LIMIT = 500
POLL_S = 0.25  # how often a live stream looks for new events
KEEPALIVE_S = 10.0


def _store(request: Request) -> RunStore:
    store: RunStore | None = getattr(request.app.state, "runs", None)
    if store is None:
        raise OpenAIError(404, "this server has no run folders: start it with `lorapipe serve --runs DIR`",
                          code="not_found")
    return store


def _may_see(who: Principal, run_id: str, base: str) -> bool:
    return who.admin or (run_id != base and who.may_use(run_id, base))


def _run_dir(request: Request, who: Principal, run_id: str) -> Path:
    store = _store(request)
    path = store.path(run_id)
    if path is None or not _may_see(who, run_id, request.app.state.engine.base_name):
        raise OpenAIError(404, f"run `{run_id}` not found; GET /v1/runs lists the runs you can see",
                          param="run_id", code="not_found")
    return path


@router.get("")
async def list_runs(request: Request, who: Authenticated) -> Any:
    """Every run folder the caller may see, newest activity first."""
    store = _store(request)
    base = request.app.state.engine.base_name

    def collect() -> list[dict[str, Any]]:
        out = []
        for run_id in store.ids():
            path = store.path(run_id)
            if path is not None and _may_see(who, run_id, base):
                out.append(store.summary(run_id, path))
        return sorted(out, key=lambda r: r.get("updated") or "", reverse=True)

    return {"object": "list", "data": await run_in_threadpool(collect)}


@router.get("/{run_id}")
async def get_run(run_id: str, request: Request, who: Authenticated) -> Any:
    path = _run_dir(request, who, run_id)
    return await run_in_threadpool(_store(request).detail, run_id, path)


@router.get("/{run_id}/report")
async def get_report(run_id: str, request: Request, who: Authenticated) -> Any:
    """The run's A/B report (self-contained HTML)."""
    report = _run_dir(request, who, run_id) / "evaluate" / "report.html"
    if not report.is_file():
        raise OpenAIError(404, f"run `{run_id}` has no report yet (the evaluate stage writes it)", code="not_found")
    return HTMLResponse(report.read_text(encoding="utf-8"))


@router.get("/{run_id}/rows")
async def get_rows(run_id: str, request: Request, who: Authenticated,
                   kind: str = "kept", origin: str | None = None, min_score: float | None = None,
                   max_score: float | None = None, reason: str | None = None, q: str | None = None,
                   offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> Any:
    path = _run_dir(request, who, run_id)
    query = RowQuery(kind, origin or None, min_score, max_score, reason or None, q, offset, limit)
    try:
        return await run_in_threadpool(_store(request).rows, path, query)
    except ValueError as e:
        raise OpenAIError(400, str(e), param="kind") from None


@router.get("/{run_id}/events")
async def stream_events(run_id: str, request: Request, who: Authenticated, after: int | None = Query(None, ge=0),
                        follow: bool = True) -> StreamingResponse:
    """The run's events as SSE; a client that reconnects with ``Last-Event-ID`` misses none and repeats none."""
    path = _run_dir(request, who, run_id) / EVENTS_FILE
    header = request.headers.get("last-event-id", "")
    start = after if after is not None else int(header) if header.strip().isdigit() else 0
    tail = EventTail(path, start)

    async def body() -> AsyncIterator[str]:
        idle = 0.0
        yield "retry: 2000\n\n"
        while True:
            events = await run_in_threadpool(tail.poll)
            for e in events:
                data = json.dumps(e, ensure_ascii=False)
                yield f"id: {e['seq']}\nevent: {e.get('type', 'message')}\ndata: {data}\n\n"
            if not follow and not events:
                yield "event: end\ndata: {}\n\n"
                return
            if events:
                idle = 0.0
                continue
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            idle += POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
