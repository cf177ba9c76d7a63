"""``lorapipe serve``: the OpenAI-compatible server (builtin engine, or vLLM behind a proxy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorapipe.cli.common import console, load

app = typer.Typer()


@app.command()
def serve(ctx: typer.Context,
          config: Annotated[Path | None, typer.Option("--config", help="pipeline.yaml: base_model and the "
                                                         "serve section.", show_default=False)] = None,
          base: Annotated[str | None, typer.Option("--base", help="Base model spec (default: config's "
                                                      "base_model, else smollm2-135m-instruct).",
                                                      show_default=False)] = None,
          adapters: Annotated[Path | None, typer.Option("--adapters", help="Directory of adapters: each "
                                                           "subfolder is one adapter, named after the folder.",
                                                           show_default=False)] = None,
          registry: Annotated[str | None, typer.Option("--registry", help="Also serve a registry's adapters "
                                                          "(a path or fsspec URL): `name` (its prod alias, else "
                                                          "the newest), `name@v3`, `name@prod`; moving an alias "
                                                          "hot-swaps.", show_default=False)] = None,
          runs: Annotated[Path | None, typer.Option("--runs", help="Folder of run folders for /v1/runs and the "
                                                       "browser UI at /ui (default: the folder of the config's "
                                                       "run dir).", show_default=False)] = None,
          host: Annotated[str | None, typer.Option("--host", help="Interface (default: serve.host, "
                                                      "127.0.0.1).", show_default=False)] = None,
          port: Annotated[int | None, typer.Option("--port", help="Port (default: serve.port, 8000).",
                                                      show_default=False)] = None,
          keys: Annotated[Path | None, typer.Option("--keys", help="YAML/JSON API keys file (tenants and "
                                                       "their adapters); without it the server is open.",
                                                       show_default=False)] = None,
          max_adapters: Annotated[int | None, typer.Option("--max-adapters", min=1, help="Adapters kept "
                                                              "loaded (LRU) (default: serve.max_loaded_adapters).",
                                                              show_default=False)] = None,
          allow_unverified: Annotated[bool, typer.Option("--allow-unverified", help="Serve adapters that have "
                                                         "no manifest.json to check their hashes against.")] = False,
          allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Serve .bin (pickle) adapters "
                                                     "you trust.")] = False,
          watch: Annotated[float, typer.Option("--watch", help="Seconds between scans of --adapters for new, "
                                               "changed or removed adapters (0: off).")] = 1.0,
          lora_kernel: Annotated[str, typer.Option("--lora-kernel", help="Builtin engine: `stacked` (fast per-row "
                                                   "LoRA on linear layers) or `peft` (PEFT's mixed batches: also "
                                                   "embedding LoRA, modules_to_save...).")] = "stacked",
          data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where uploaded files, fine-tuning "
                                                           "jobs (SQLite queue, runs) and, without --registry, "
                                                           "their adapters live (default: $LORAPIPE_DATA_DIR, else "
                                                           "~/.local/share/lorapipe/serve).",
                                                           show_default=False)] = None,
          weights: Annotated[str | None, typer.Option("--weights", help="Builtin engine, Llama models on CPU: "
                                                      "base weights `auto`, `bf16`, `fp16`, `fp32` or `int8` "
                                                      "(fastest, not exact); default: the config's "
                                                      "inference.weights, auto: bf16 with AMX, else fp16.")] = None,
          engine: Annotated[str, typer.Option("--engine", help="`builtin` (this process) or `vllm` (vLLM's "
                                              "server behind a lorapipe proxy that keeps keys and hot-swap; "
                                              "CUDA, pip install vllm).")] = "builtin",
          dry_run: Annotated[bool, typer.Option("--dry-run", help="With --engine vllm: print the vLLM command "
                                                "line and exit.")] = False,
          vllm_port: Annotated[int | None, typer.Option("--vllm-port", help="vLLM's own loopback port "
                                                           "(default: --port + 1).", show_default=False)] = None,
          vllm_args: Annotated[list[str] | None, typer.Option("--vllm-arg", help="Extra argument for `vllm "
                                                                 "serve`, repeatable, e.g. --vllm-arg=--dtype "
                                                                 "--vllm-arg=bfloat16.")] = None) -> None:
    """Serve the base model and every adapter in --adapters over an OpenAI-compatible API
    (/v1/chat/completions, /v1/completions, /v1/models), with hot-swap (/admin/adapters, the
    directory watch, registry aliases), API keys per tenant, /health and /metrics; OpenAI's
    Files and fine-tuning jobs API (/v1/files, /v1/fine_tuning/jobs): jobs train the base model and
    their `ft:` models are served at once; and a browser UI at /ui (runs, data, playground, registry)."""
    from lorapipe.config import InferenceConfig, ServeConfig
    from lorapipe.serve import server

    cfg = load(config) if config is not None else None
    sc = cfg.serve if cfg is not None else ServeConfig()
    ic = cfg.inference if cfg is not None else InferenceConfig()
    spec = base or (cfg.base_model if cfg is not None else server.DEFAULT_BASE)
    if engine not in ("builtin", "vllm"):
        from lorapipe.errors import ConfigError

        raise ConfigError(f"--engine: `{engine}` is not an engine; use `builtin` or `vllm`")
    if engine == "vllm":
        from lorapipe.serve import vllm

        if registry is not None or adapters is None:
            from lorapipe.errors import ConfigError

            raise ConfigError("--engine vllm serves an --adapters DIR; for a registry, `lorapipe registry pull` "
                              "the versions into one first")

        vllm.run(base=spec, adapters=adapters, host=host or sc.host, port=port or sc.port, keys=keys,
                 max_adapters=max_adapters or sc.max_loaded_adapters, vllm_port=vllm_port,
                 rank_floor=cfg.lora.r if cfg is not None else None, allow_unverified=allow_unverified,
                 allow_pickle=allow_pickle, extra_args=vllm_args or [], dry_run=dry_run,
                 warn=lambda msg: console.print(f"[yellow]{msg}[/]", markup=True, highlight=False))
        return
    if dry_run:
        from lorapipe.errors import ConfigError

        raise ConfigError("--dry-run prints the vLLM command line: use it with --engine vllm")
    server.run(base=spec, adapters=adapters, registry=registry, host=host or sc.host, port=port or sc.port, keys=keys,
               max_adapters=max_adapters or sc.max_loaded_adapters, batch_window_ms=sc.batch_window_ms,
               max_batch_size=sc.max_batch_size, allow_unverified=allow_unverified, allow_pickle=allow_pickle,
               watch_interval_s=watch or None, lora_kernel=lora_kernel, queue_timeout_s=sc.queue_timeout_s,
               max_request_bytes=sc.max_request_bytes, data_dir=data_dir,
               runs=runs or (cfg.run_dir.parent if cfg is not None else None),
               fast=ic.fast, weights=weights or ic.weights,
               warn=lambda msg: console.print(f"[yellow]{msg}[/]", markup=True, highlight=False))
