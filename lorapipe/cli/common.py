"""What every command shares: the root options (kept in Typer's context), config loading with
``--set``, result printing, and an engine whose events the terminal shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Path to pipeline.yaml.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: KEY=VALUE "
                                                     "(dotted path, YAML value), repeatable.")]
RegistryUrlOpt = Annotated[str | None, typer.Option(help="Registry URL (default $LORAPIPE_REGISTRY or "
                                                       "~/.local/share/lorapipe/registry).")]


@dataclass
class State:
    quiet: bool = False
    json: bool = False


def state(ctx: click.Context | typer.Context | None) -> State:
    """The root options (``--quiet``, ``--json``) from the command's context."""
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, State) else State()


def emit(ctx: typer.Context, result: dict[str, Any], human: str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json, else a human line."""
    if state(ctx).json:
        print(json.dumps(result, indent=2, default=str))
    elif human:
        print(human)


def load(config: Path, overrides: list[str] | None = None):  # -> PipelineConfig (imported lazily)
    from lorapipe.config import load_config, parse_overrides

    return load_config(config, parse_overrides(overrides or []))


def engine_events(messages: bool = True):  # -> lorapipe.events.EventBus
    """An event bus with the terminal subscribed (progress bars, stage lines, and messages unless the
    command prints its result itself)."""
    from lorapipe.events import EventBus
    from lorapipe.progress import ConsoleProgress

    bus = EventBus()
    bus.subscribe(ConsoleProgress(messages=messages))
    return bus


def engine(ctx: typer.Context, cfg: Any, messages: bool = True, **options: Any):  # -> lorapipe.pipeline.Pipeline
    """The engine for ``cfg`` with the terminal subscribed to its events."""
    from lorapipe.pipeline import Pipeline

    return Pipeline(cfg, events=engine_events(messages), **options)


def fmt_metrics(m: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
