"""The `lorapipe` command line: parse, load the config, call the stage's ``run()``, print where
the artifacts are. Errors a user can fix are printed without a traceback (exit 2 for bad input)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lorapipe.errors import LorapipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From a task description and raw inputs to a deployed, versioned LoRA adapter.")
console = Console(stderr=True)
STATE = {"quiet": False, "json": False}

ConfigArg = Annotated[Path, typer.Argument(help="Path to pipeline.yaml.", show_default=False)]


@app.callback()
def _root(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the result.")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False) -> None:
    import logging

    STATE["quiet"], STATE["json"] = quiet, as_json
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        import os

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def emit(result: dict, human: str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json, else a human line."""
    if STATE["json"]:
        print(json.dumps(result, indent=2, default=str))
    elif human:
        print(human)


# ---- commands are added below, each importing its stage lazily so `--help` stays fast ----------


def main() -> None:
    try:
        app()
    except LorapipeError as e:
        console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
