"""Admin routes: load, replace and unload adapters at run time (admin key required when keys are set).

``POST /admin/adapters {"name", "path"}`` loads the PEFT directory ``path`` as ``name`` (replacing the
loaded version, if any: requests running on the old version finish on it). ``DELETE
/admin/adapters/{name}`` unloads it. Neither touches the base model.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lorapipe.serve.adapters import AdapterRejected
from lorapipe.serve.auth import Admin
from lorapipe.serve.engine import Engine
from lorapipe.serve.schemas import LoadAdapterRequest, OpenAIError

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/adapters")
async def loaded_adapters(request: Request, _: Admin) -> Any:
    """Loaded adapters: name -> version."""
    engine: Engine = request.app.state.engine
    return {"loaded": engine.loaded(), "max_loaded_adapters": engine.max_loaded_adapters}


@router.post("/adapters")
async def load_adapter(body: LoadAdapterRequest, request: Request, _: Admin) -> Any:
    """Load or replace an adapter from a directory on the server."""
    engine: Engine = request.app.state.engine
    request.state.model = body.name
    try:
        slot = await run_in_threadpool(engine.load, body.name, body.path)
    except AdapterRejected as e:  # the caller's directory is at fault here, not the server
        raise OpenAIError(400, str(e), param="path", code="adapter_rejected") from None
    return {"name": slot.name, "version": slot.version, "loaded": True}


@router.delete("/adapters/{name}")
async def unload_adapter(name: str, request: Request, _: Admin) -> Any:
    """Unload an adapter; requests still running on it finish first."""
    engine: Engine = request.app.state.engine
    await run_in_threadpool(engine.unload, name)
    return {"name": name, "loaded": False}
