"""Serve one base model and many LoRA adapters over an OpenAI-compatible HTTP API.

Modules, by concern::

    adapters.py   AdapterSource protocol (directory now, registry later), name and hash checks
    engine.py     base model + adapter versions (LRU, leases, hot-swap) + the scheduler thread
    decode.py     continuous-batching decode loop: per-row adapter, sampling, stop strings, streaming
    schemas.py    OpenAI request bodies and the OpenAI error
    auth.py       API keys -> tenants and their adapters
    openai_api.py /v1/chat/completions, /v1/completions, /v1/models
    admin_api.py  /admin/adapters (load, replace, unload)
    ops_api.py    /health, /metrics
    watch.py      polls the adapter source and hot-swaps what changed
    files_api.py  OpenAI's /v1/files (uploads stored by content hash)
    ft_api.py     OpenAI's /v1/fine_tuning/jobs (+ events, checkpoints, pause/resume), DELETE /v1/models
    ft_store.py   the data dir: SQLite (files, jobs, events, checkpoints) and blobs
    ft_validate.py  OpenAI's checks of training files (invalid_n_examples, ...)
    ft_runs.py    a job as an engine run: its pipeline.yaml, its events read back as OpenAI's
    ft_worker.py  the queue's worker (one child process per job) and the `ft:` adapter source
    app.py        create_app(settings, engine): routers, error shape, metrics middleware, lifespan
    server.py     uvicorn in the foreground (`lorapipe serve`) or in a thread (tests)

Names are imported lazily so ``import lorapipe.serve`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "AdapterSource": "adapters", "DirectoryAdapterSource": "adapters", "ResolvedAdapter": "adapters",
    "AdapterNotFound": "adapters", "AdapterRejected": "adapters", "verify_adapter_dir": "adapters",
    "Engine": "engine", "SamplingParams": "decode", "ServeSettings": "app", "create_app": "app",
    "KeyStore": "auth", "ServerThread": "server",
}
__all__ = ["AdapterNotFound", "AdapterRejected", "AdapterSource", "DirectoryAdapterSource", "Engine", "KeyStore",
           "ResolvedAdapter", "SamplingParams", "ServeSettings", "ServerThread", "create_app", "verify_adapter_dir"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"lorapipe.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lorapipe.serve' has no attribute {name!r}")
