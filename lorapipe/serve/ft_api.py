"""OpenAI's fine-tuning jobs API: ``/v1/fine_tuning/jobs`` and ``DELETE /v1/models/{ft-model}``.

Routes (the official ``openai`` SDK's ``client.fine_tuning.jobs.*`` calls them unchanged)::

    POST   /v1/fine_tuning/jobs                      create (supervised; `method` or the old `hyperparameters`)
    GET    /v1/fine_tuning/jobs                      list: newest first, `after`, `limit`, `metadata[k]=v`
    GET    /v1/fine_tuning/jobs/{id}                 retrieve
    POST   /v1/fine_tuning/jobs/{id}/cancel|pause|resume
    GET    /v1/fine_tuning/jobs/{id}/events          newest first; `message` and `metrics` events
    GET    /v1/fine_tuning/jobs/{id}/checkpoints     one per epoch, newest first
    DELETE /v1/models/{model}                        a fine-tuned model (its registry version stays)

A key sees only its tenant's jobs (another tenant's job answers 404, like an unknown id); the
organisation slot of ``ft:{base}:{org}:{suffix}:{id}`` is the tenant's name, or ``local`` on a server
without a keys file. Work happens in :class:`lorapipe.serve.ft_worker.FineTuning`.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lorapipe.serve.auth import Authenticated, Principal, check_model_access, org_slot
from lorapipe.serve.files_api import store_of
from lorapipe.serve.ft_store import TERMINAL
from lorapipe.serve.ft_worker import FineTuning
from lorapipe.serve.schemas import OpenAIError

router = APIRouter(tags=["fine-tuning"])
OPEN_ORG = "local"  # the org slot of fine-tuned model names on a server without --keys

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method
    integrations: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(x) > 512 for k, x in v.items())):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return v


def _ft(request: Request) -> FineTuning:
    return request.app.state.fine_tuning


def org_of(request: Request, who: Principal) -> str:
    return OPEN_ORG if request.app.state.settings.keys is None else org_slot(who.tenant)


def job_object(job: dict[str, Any]) -> dict[str, Any]:
    hp = job["hyperparameters"] or {}
    return {"id": job["id"], "object": "fine_tuning.job", "created_at": job["created_at"], "error": job["error"],
            "fine_tuned_model": job["fine_tuned_model"], "finished_at": job["finished_at"], "hyperparameters": hp,
            "model": job["model"], "organization_id": job["org"], "result_files": job["result_files"] or [],
            "seed": job["seed"], "status": job["status"], "trained_tokens": job["trained_tokens"],
            "training_file": job["training_file"], "validation_file": job["validation_file"],
            "estimated_finish": job["estimated_finish"], "integrations": [], "metadata": job["metadata"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}, "suffix": job["suffix"]}


def owned_job(request: Request, job_id: str, who: Principal) -> dict[str, Any]:
    job = _ft(request).store.job(job_id)
    if job is None or not (who.admin or job["tenant"] == who.tenant):
        raise OpenAIError(404, f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="not_found")
    return job


def _page(items: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": more}


def _training_file(request: Request, fid: str | None, who: Principal, param: str) -> None:
    f = store_of(request).file(fid) if fid else None
    if f is None or not (who.admin or f["tenant"] == who.tenant):
        raise OpenAIError(400, f"invalid {param}: {fid} is not a file of yours; upload it with purpose "
                          "`fine-tune` (POST /v1/files)", param=param, code=f"invalid_{param}")
    if f["purpose"] != "fine-tune":
        raise OpenAIError(400, f"invalid {param}: {fid} was uploaded with purpose `{f['purpose']}`, not "
                          "`fine-tune`", param=param, code=f"invalid_{param}")


@router.post("/v1/fine_tuning/jobs")
def create_job(body: CreateJob, request: Request, who: Authenticated) -> Any:
    """Create a supervised fine-tuning job of the server's base model on an uploaded file."""
    ft = _ft(request)
    base = ft.engine.base_name
    if body.model not in (base, ft.base_spec):
        raise OpenAIError(400, f"model `{body.model}` cannot be fine-tuned here; this server fine-tunes its base "
                          f"model `{base}`", param="model", code="model_not_available")
    check_model_access(who, base, base)
    if body.integrations:
        raise OpenAIError(400, "`integrations` (Weights & Biases) are not supported; the job's events and "
                          "result file carry its metrics", param="integrations", code="unsupported_parameter")
    method = body.method
    if method is not None and method.type != "supervised":
        raise OpenAIError(400, f"method `{method.type}` is not supported; use `supervised`", param="method.type",
                          code="unsupported_parameter")
    if body.suffix is not None and not re.fullmatch(r"[A-Za-z0-9_.-]*", body.suffix):
        raise OpenAIError(400, "`suffix` may hold letters, digits and `_ . -` only", param="suffix",
                          code="invalid_suffix")
    _training_file(request, body.training_file, who, "training_file")
    if body.validation_file is not None:
        _training_file(request, body.validation_file, who, "validation_file")
    hp = method.supervised.hyperparameters if method and method.supervised else None
    hp = hp or body.hyperparameters or Hyperparameters()
    job = ft.store.add_job(tenant=who.tenant, org=org_of(request, who), model=body.model,
                           training_file=body.training_file, validation_file=body.validation_file,
                           suffix=body.suffix or None,
                           seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
                           metadata=body.metadata, hyperparameters=hp.model_dump())
    ft.store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
    ft.wake()
    return job_object(job)


@router.get("/v1/fine_tuning/jobs")
def list_jobs(request: Request, who: Authenticated, after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """The caller's jobs, newest first; ``metadata[key]=value`` filters."""
    wanted = {m.group(1): v for k, v in request.query_params.items() if (m := re.fullmatch(r"metadata\[(.+)\]", k))}
    jobs, more = _ft(request).store.jobs(None if who.admin else who.tenant, after=after, limit=limit,
                                         metadata=wanted)
    return _page([job_object(j) for j in jobs], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, request: Request, who: Authenticated) -> Any:
    return job_object(owned_job(request, job_id, who))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, who: Authenticated) -> Any:
    job = owned_job(request, job_id, who)
    if job["status"] in TERMINAL:
        raise OpenAIError(400, f"the job is already {job['status']}; only unfinished jobs can be cancelled",
                          param="fine_tuning_job_id", code="invalid_state")
    return job_object(_ft(request).cancel(job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, request: Request, who: Authenticated) -> Any:
    job = owned_job(request, job_id, who)
    if job["status"] not in ("queued", "running") or job["control"]:
        raise OpenAIError(400, f"the job is {job['status']}; only a queued or running job can be paused",
                          param="fine_tuning_job_id", code="invalid_state")
    return job_object(_ft(request).pause(job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, request: Request, who: Authenticated) -> Any:
    job = owned_job(request, job_id, who)
    if job["status"] != "paused":
        raise OpenAIError(400, f"the job is {job['status']}; only a paused job can be resumed",
                          param="fine_tuning_job_id", code="invalid_state")
    return job_object(_ft(request).resume(job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, request: Request, who: Authenticated, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Any:
    owned_job(request, job_id, who)
    events, more = _ft(request).store.events(job_id, after=after, limit=limit)
    data = [{"id": e["id"], "object": "fine_tuning.job.event", "created_at": e["created_at"], "level": e["level"],
             "message": e["message"], "type": e["type"], "data": e["data"]} for e in events]
    return _page(data, more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, request: Request, who: Authenticated, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 10) -> Any:
    owned_job(request, job_id, who)
    rows, more = _ft(request).store.checkpoints(job_id, after=after, limit=limit)
    data = [{"id": c["id"], "object": "fine_tuning.job.checkpoint", "created_at": c["created_at"],
             "fine_tuned_model_checkpoint": c["model"], "fine_tuning_job_id": job_id, "metrics": c["metrics"],
             "step_number": c["step"]} for c in rows]
    return _page(data, more)


@router.delete("/v1/models/{model:path}")
def delete_model(model: str, request: Request, who: Authenticated) -> Any:
    """Delete a fine-tuned model: it is unloaded and no longer served (the registry keeps its version)."""
    ft = _ft(request)
    if not model.startswith("ft:"):
        raise OpenAIError(403, f"`{model}` is not a fine-tuned model; only `ft:` models can be deleted",
                          type="permission_error", param="model", code="model_not_deletable")
    check_model_access(who, model, ft.engine.base_name)
    job = ft.store.job_of_model(model)
    if job is None:
        raise OpenAIError(404, f"model `{model}` not found", param="model", code="model_not_found")
    ft.store.update_job(job["id"], model_deleted=1)
    ft.engine.unload_from_source(model)
    return {"id": model, "object": "model", "deleted": True}
