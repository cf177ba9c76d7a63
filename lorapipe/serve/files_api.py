"""OpenAI's Files API: ``/v1/files`` (upload, list, retrieve, delete) and ``/v1/files/{id}/content``.

Uploads go to the server's data directory, stored by content hash (:class:`~lorapipe.serve.ft_store.Store`);
a file is ``processed`` once stored. Training rows are checked when a job uses them, and a bad
file fails that job with OpenAI's error codes (``invalid_n_examples``, ...), as OpenAI does. A key
sees only its own files (another tenant's id answers 404, as an unknown one does); an admin key sees all.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from lorapipe.serve.auth import Authenticated, Principal
from lorapipe.serve.ft_store import Store
from lorapipe.serve.schemas import OpenAIError

router = APIRouter(tags=["files"])
PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals")
MAX_LIST = 10000


def store_of(request: Request) -> Store:
    return request.app.state.fine_tuning.store


def file_object(f: dict[str, Any]) -> dict[str, Any]:
    return {"id": f["id"], "object": "file", "bytes": f["bytes"], "created_at": f["created_at"],
            "filename": f["filename"], "purpose": f["purpose"], "status": f["status"],
            "status_details": f["status_details"], "expires_at": None}


def owned_file(store: Store, fid: str, who: Principal, param: str = "file_id") -> dict[str, Any]:
    """The file ``fid`` if ``who`` may see it, else 404 (someone else's file is not said to exist)."""
    f = store.file(fid)
    if f is None or not (who.admin or f["tenant"] == who.tenant):
        raise OpenAIError(404, f"No such File object: {fid}", param=param, code="file_not_found")
    return f


@router.post("/v1/files")
def upload(request: Request, who: Authenticated, file: Annotated[UploadFile, File()],
           purpose: Annotated[str, Form()]) -> Any:
    """Upload a file (multipart: ``file``, ``purpose``)."""
    if purpose not in PURPOSES:
        raise OpenAIError(400, f"`purpose` {purpose!r} is not one of {', '.join(PURPOSES)}", param="purpose",
                          code="invalid_purpose")
    store = store_of(request)
    sha, size = store.put_blob(file.file)
    if size == 0:
        raise OpenAIError(400, "the file is empty", param="file", code="empty_file")
    name = (file.filename or "upload").replace("/", "_")[-255:]
    return file_object(store.add_file(who.tenant, name, purpose, sha, size))


@router.get("/v1/files")
def list_files(request: Request, who: Authenticated, after: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST,
               order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> Any:
    """The caller's files, newest first unless ``order=asc``; paged with ``after`` and ``limit``."""
    rows, more = store_of(request).files(None if who.admin else who.tenant, purpose=purpose, after=after,
                                         limit=limit, ascending=order == "asc")
    data = [file_object(f) for f in rows]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, request: Request, who: Authenticated) -> Any:
    return file_object(owned_file(store_of(request), file_id, who))


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, request: Request, who: Authenticated) -> Any:
    store = store_of(request)
    owned_file(store, file_id, who)
    store.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, request: Request, who: Authenticated) -> Any:
    store = store_of(request)
    f = owned_file(store, file_id, who)
    media = "text/csv" if f["filename"].endswith(".csv") else "application/octet-stream"
    return FileResponse(store.blob_path(f["sha256"]), media_type=media, filename=f["filename"])
