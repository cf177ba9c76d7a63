"""The browser UI at ``/ui``: static HTML, CSS and vanilla JS (no build step, nothing fetched from a CDN).

The pages hold no data and need no key; everything they show comes from the same HTTP API that users
and the SDK call (``/v1/runs``, ``/v1/registry``, ``/v1/models``, ``/v1/chat/completions``,
``/v1/files``, ``/v1/fine_tuning/jobs``), with the key the user enters once (kept in the tab's
``sessionStorage``). Any path under ``/ui/`` that is not a static file is a page: the shell loads and
the script renders it, so a reload or a shared link opens the same page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from lorapipe.serve.schemas import OpenAIError

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
_NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a server upgrade must not run yesterday's script

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/runs")


@router.get("/ui/static/{name}")
async def ui_static(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise OpenAIError(404, f"/ui/static/{name} not found", code="not_found")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_NO_CACHE)


@router.get("/ui/{page:path}")
async def ui_page(page: str) -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers=_NO_CACHE)
