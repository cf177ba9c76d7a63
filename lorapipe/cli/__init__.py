"""The `lorapipe` command line: parse, load the config, call the engine, print where the artifacts are.
Errors a user can fix are printed without a traceback (exit 2 for bad input).

One module per concern, each adding its commands to the root app: ``stages`` (run and the stage
verbs), ``train_eval``, ``tools`` (predict, export, rebuild), ``serve``, ``registry`` (a sub-app).
The root options live in Typer's context (:class:`lorapipe.cli.common.State`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lorapipe.cli import registry, serve, stages, tools, train_eval
from lorapipe.cli.common import State, console
from lorapipe.errors import LorapipeError

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From a task description and raw inputs to a deployed, versioned LoRA adapter.")


@app.callback()
def _root(ctx: typer.Context,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the result.")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False) -> None:
    import logging
    import os
    import warnings

    from lorapipe.progress import set_quiet

    ctx.obj = State(quiet=quiet, json=as_json)
    set_quiet(quiet or as_json)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Deprecation notices from the libraries are for lorapipe's developers, not its users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


for _module in (stages, train_eval, tools, serve):
    for _cmd in _module.app.registered_commands:
        app.registered_commands.append(_cmd)
app.add_typer(registry.app, name="registry")


def main() -> None:
    try:
        app()
    except LorapipeError as e:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
