"""vLLM as the serving engine: ``lorapipe serve --engine vllm``.

lorapipe starts vLLM's own OpenAI-compatible server on a loopback port and stays in front of it as a
thin proxy (:mod:`lorapipe.serve.vllm_proxy`) that checks tenant keys, maps adapter names and turns
hot-swaps into vLLM's runtime LoRA calls. The vLLM command line is::

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE_DIR --served-model-name BASE_NAME \\
        --enable-lora --lora-modules NAME=DIR ... --max-lora-rank R --max-loras N \\
        --host 127.0.0.1 --port PORT+1

* ``BASE_DIR`` is a local Hugging Face directory: the base spec is resolved with
  :func:`lorapipe.models.resolve` (the embedded ``smollm2-135m-instruct`` becomes its cached
  safetensors conversion), so vLLM never downloads anything;
* every adapter folder under ``--adapters`` that vLLM can load becomes one ``--lora-modules``
  entry named after the folder (the others are reported and skipped);
* ``R`` is the largest adapter rank rounded up to a size vLLM accepts (8, 16, 32, ...);
* ``N`` (adapters in one GPU batch) is ``serve.max_loaded_adapters``.

``--dry-run`` prints that command line, shell-quoted, and exits.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lorapipe.errors import ServeError

log = logging.getLogger(__name__)

__all__ = ["VLLM_LORA_RANKS", "VllmPlan", "plan", "round_rank", "run", "vllm_command"]

# --max-lora-rank values vLLM accepts (vllm/config/lora.py MaxLoRARanks)
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
RUNTIME_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # enables /v1/load_lora_adapter


def round_rank(r: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds rank ``r``."""
    for size in VLLM_LORA_RANKS:
        if r <= size:
            return size
    raise ServeError(f"LoRA rank {r} is larger than vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]}); "
                     "retrain with a smaller lora.r or serve with the built-in engine")


@dataclass
class VllmPlan:
    """Everything the vLLM command line is made of."""

    base_dir: Path  # local HF directory
    base_name: str  # what clients call the base model (--served-model-name)
    adapters: dict[str, Path]  # --lora-modules name -> directory
    max_lora_rank: int
    max_loras: int
    host: str = "127.0.0.1"
    port: int = 8001
    extra_args: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # adapter -> why vLLM cannot load it
    versions: dict[str, str] = field(default_factory=dict)  # adapter -> content version at start

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def vllm_command(p: VllmPlan, executable: str = "vllm") -> list[str]:
    """``vllm serve`` argv for ``p`` (the environment it needs is :data:`RUNTIME_ENV`)."""
    cmd = [executable, "serve", str(p.base_dir), "--served-model-name", p.base_name, "--host", p.host,
           "--port", str(p.port), "--enable-lora", "--max-lora-rank", str(p.max_lora_rank),
           "--max-loras", str(p.max_loras)]
    if p.adapters:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in sorted(p.adapters.items()))]
    return cmd + list(p.extra_args)


def shell_line(p: VllmPlan) -> str:
    """The command line a user can paste into a shell (environment first)."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in RUNTIME_ENV.items())
    return f"{env} {shlex.join(vllm_command(p))}"


def plan(*, base: str, adapters: Path | None, max_loras: int, port: int, rank_floor: int | None = None,
         allow_unverified: bool = False, allow_pickle: bool = False, extra_args: Sequence[str] = (),
         warn: Callable[[str], None] = print) -> VllmPlan:
    """Resolve the base to a local directory and gather the adapters vLLM will load at start.

    ``port`` is vLLM's own (loopback) port. ``rank_floor`` (e.g. the config's ``lora.r``) sets the
    rank when there are no adapters yet, so adapters hot-swapped in later still fit.
    """
    from lorapipe.adapter_files import AdapterInvalid, lora_rank, verify_adapter_dir, vllm_problems
    from lorapipe.models import resolve
    from lorapipe.serve.adapters import DirectoryAdapterSource, content_version

    info = resolve(base)
    if info.kind == "gguf":
        log.info("vLLM gets the dequantized copy of %s: %s", base, info.path)
    base_name = Path(base).name if Path(base).expanduser().exists() else base
    found: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    ranks = []
    if adapters is not None:
        source = DirectoryAdapterSource(adapters)
        for name in source.snapshot():
            path = (source.root / name).resolve()
            try:
                verified = verify_adapter_dir(path, allow_pickle=allow_pickle, require_manifest=not allow_unverified)
            except AdapterInvalid as e:
                skipped[name] = str(e)
                continue
            problems = vllm_problems(verified.config)
            if verified.weights.suffix != ".safetensors":
                problems.append("pickle weights: vLLM loads adapter_model.safetensors; re-export the adapter")
            if problems:
                skipped[name] = "; ".join(problems)
                continue
            found[name] = path
            versions[name] = content_version(path)
            ranks.append(lora_rank(verified.config))
    for name, why in skipped.items():
        warn(f"warning: adapter `{name}` is not served by vLLM: {why}")
    rank = round_rank(max(ranks) if ranks else (rank_floor or 16))
    return VllmPlan(base_dir=info.path, base_name=base_name, adapters=found, max_lora_rank=rank,
                    max_loras=max_loras, port=port, extra_args=list(extra_args), skipped=skipped, versions=versions)


def _vllm_executable() -> str:
    """The ``vllm`` program: $LORAPIPE_VLLM (e.g. from a separate venv), else on PATH or next to python."""
    exe = os.environ.get("LORAPIPE_VLLM") or shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
    if not Path(exe).is_file():
        raise ServeError("--engine vllm needs vLLM on a CUDA machine: pip install 'lorapipe[vllm]' (or pip install "
                         "vllm, or point $LORAPIPE_VLLM at the `vllm` program of another environment); use "
                         "`--dry-run` to print the command, or the built-in engine without --engine")
    return exe


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float) -> None:
    """Block until ``url``/health answers 200; raise if ``proc`` exits or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"vLLM exited with code {proc.returncode} while starting; see its log above")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise ServeError(f"vLLM did not become healthy at {url} within {timeout_s:.0f} s; see its log above")


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM vLLM (it drains and frees the GPU), SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(*, base: str, adapters: Path | None, host: str = "127.0.0.1", port: int = 8000, keys: Path | None = None,
        max_adapters: int = 8, vllm_port: int | None = None, rank_floor: int | None = None,
        allow_unverified: bool = False, allow_pickle: bool = False, extra_args: Sequence[str] = (),
        dry_run: bool = False, startup_timeout_s: float = 1200, warn: Callable[[str], None] = print,
        echo: Callable[[str], None] = print) -> None:
    """Start vLLM with the adapters under ``adapters`` and serve the lorapipe proxy in front of it.

    With ``dry_run`` only print the vLLM command line. vLLM listens on ``vllm_port`` (default
    ``port + 1``) on the loopback interface; clients talk to the proxy on ``host:port``.
    """
    import uvicorn

    from lorapipe.serve.adapters import DirectoryAdapterSource
    from lorapipe.serve.auth import KeyStore
    from lorapipe.serve.server import is_loopback
    from lorapipe.serve.vllm_proxy import ProxySettings, create_proxy_app

    p = plan(base=base, adapters=adapters, max_loras=max_adapters, port=vllm_port or port + 1,
             rank_floor=rank_floor, allow_unverified=allow_unverified, allow_pickle=allow_pickle,
             extra_args=extra_args, warn=warn)
    if dry_run:
        echo(shell_line(p))
        return
    store = KeyStore.load(keys) if keys else None
    if store is None and not is_loopback(host):
        warn(f"warning: no --keys file: anyone who can reach {host}:{port} can use every adapter and the admin "
             "API. Pass --keys FILE or bind 127.0.0.1")
    cmd = vllm_command(p, _vllm_executable())
    log.info("starting vLLM: %s", shlex.join(cmd))
    proc = subprocess.Popen(cmd, env={**os.environ, **RUNTIME_ENV})
    try:
        wait_healthy(p.url, proc, startup_timeout_s)
        settings = ProxySettings(upstream=p.url, base_name=p.base_name, keys=store,
                                 require_manifest=not allow_unverified, allow_pickle=allow_pickle,
                                 max_lora_rank=p.max_lora_rank)
        source = DirectoryAdapterSource(adapters) if adapters is not None else None
        app = create_proxy_app(settings, source=source, preloaded={n: p.versions[n] for n in p.adapters})
        echo(f"vLLM at {p.url}; lorapipe proxy on http://{host}:{port} "
             f"({len(p.adapters)} adapter(s), max rank {p.max_lora_rank})")
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        stop(proc)

