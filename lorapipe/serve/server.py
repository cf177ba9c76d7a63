"""Run the app with uvicorn: in the foreground (``lorapipe serve``) or in a thread (tests, benchmarks).

On SIGINT/SIGTERM uvicorn stops accepting connections and waits up to ``shutdown_timeout_s`` for the
open ones (streams included) to finish; the app's lifespan then drains the scheduler.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path
from typing import Any

from lorapipe.errors import ServeError

log = logging.getLogger(__name__)
DEFAULT_BASE = "smollm2-135m-instruct"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerThread:
    """``with ServerThread(app) as srv: srv.url`` — a real server on a free loopback port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, shutdown_timeout_s: float = 30.0):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=shutdown_timeout_s)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="lorapipe-uvicorn", daemon=True)
        self.host = host
        self.port = port

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServeError("the server did not start; see the log above")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def passive_openmp() -> None:
    """Let torch's OpenMP threads sleep, not spin, between operations (unless OMP_WAIT_POLICY is set).

    A server's decode steps are many small operations; spinning threads on a CPU shared with other
    processes (a training run, other workers) fight them for the cores. Measured with the embedded
    model on the shared 2-core machine (load ~3): a 32-token prompt, 1 token answer 2.8-4.2 s spinning,
    0.44 s passive; 16 tokens 9.4 s vs 2.0 s. On an idle machine passive halves batch-1 decoding (engine,
    2 cores: 22 tok/s passive, 43 with OMP_WAIT_POLICY=ACTIVE), so a machine that only serves should set
    ACTIVE. Only effective before torch is imported."""
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(*, base: str, adapters: Path | None = None, registry: str | None = None, host: str = "127.0.0.1",
        port: int = 8000, keys: Path | None = None,
        max_adapters: int = 8, batch_window_ms: float = 5.0, max_batch_size: int = 16,
        allow_unverified: bool = False, allow_pickle: bool = False, watch_interval_s: float | None = 1.0,
        lora_kernel: str = "stacked", device: str | None = None, queue_timeout_s: float | None = 30.0,
        max_request_bytes: int | None = 4 * 1024 * 1024, data_dir: Path | None = None, runs: Path | None = None,
        fast: bool = True, weights: str = "auto",
        warn: Any = print) -> None:
    """Load the base once, then serve it and the adapters under ``adapters`` and/or in ``registry`` (a
    registry URL: ``name``, ``name@vN``, ``name@ALIAS``; moving an alias hot-swaps) until interrupted.

    It also speaks OpenAI's Files and fine-tuning jobs API; uploads, jobs and their runs live under
    ``data_dir`` (default :func:`lorapipe.serve.ft_store.default_data_dir`), finished adapters go to
    ``registry`` (else ``data_dir/registry``) and are served as ``ft:...`` models."""
    passive_openmp()
    import uvicorn

    from lorapipe.serve.adapters import ChainedAdapterSource, DirectoryAdapterSource
    from lorapipe.serve.app import ServeSettings, create_app
    from lorapipe.serve.auth import KeyStore
    from lorapipe.serve.engine import Engine

    store = KeyStore.load(keys) if keys else None
    if store is None and not is_loopback(host):
        warn(f"warning: no --keys file: anyone who can reach {host}:{port} can use every adapter and the admin "
             "API. Pass --keys FILE (see lorapipe/serve/auth.py) or bind 127.0.0.1")
    from lorapipe.serve.ft_store import default_data_dir
    from lorapipe.serve.ft_worker import FineTuning

    local_base = Path(base).expanduser()
    # jobs run in their own folders: a base given as a relative path must not depend on this one
    fine_tuning = FineTuning(data_dir or default_data_dir(), str(local_base.resolve()) if local_base.exists() else base,
                             registry=registry)
    sources: list = [fine_tuning.source]
    if adapters is not None:
        sources.append(DirectoryAdapterSource(adapters))
    if registry is not None:
        from lorapipe.models import cache_dir
        from lorapipe.serve.registry_source import RegistryAdapterSource

        sources.append(RegistryAdapterSource(registry, cache_dir() / "registry-adapters", include_versions=True))
    source = sources[0] if len(sources) == 1 else ChainedAdapterSource(sources)
    base_name = Path(base).name if Path(base).expanduser().exists() else base
    engine = Engine.from_spec(base, source=source, base_name=base_name, max_loaded_adapters=max_adapters,
                              batch_window_ms=batch_window_ms, max_batch_size=max_batch_size,
                              require_manifest=not allow_unverified, allow_pickle=allow_pickle,
                              lora_kernel=lora_kernel, device=device, queue_timeout_s=queue_timeout_s,
                              fast=fast, weights=weights)
    settings = ServeSettings(keys=store, watch_interval_s=watch_interval_s, max_request_bytes=max_request_bytes,
                             fine_tuning=fine_tuning, runs_dir=runs)
    app = create_app(settings, engine)
    log.info("serving `%s` with adapters from %s on http://%s:%d; fine-tuning data in %s", base_name,
             " and ".join(str(x) for x in (adapters, registry) if x is not None) or "fine-tuning jobs", host, port,
             fine_tuning.store.root)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=settings.shutdown_timeout_s)
