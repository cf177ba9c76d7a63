"""Progress display for long work: one rich progress bar per stage, silent with ``--quiet``.

Stages take a ``progress`` callable (``progress(n)`` after n more items are done) and never import
rich themselves; the CLI and the pipeline runner decide how progress is shown.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_QUIET = {"on": False}


def set_quiet(quiet: bool) -> None:
    _QUIET["on"] = quiet


def quiet() -> bool:
    return _QUIET["on"] or os.environ.get("LORAPIPE_QUIET") == "1"


def say(msg: str) -> None:
    """A status line on stderr (rich markup allowed), unless quiet."""
    if not quiet():
        console.print(msg, highlight=False)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback drawing a progress bar (plain lines when not a terminal)."""
    if quiet():
        yield lambda n=1: None
        return
    if not sys.stderr.isatty():
        # CI logs and pipes: a line every ~10 % instead of a redrawn bar.
        done = {"n": 0, "shown": -1}

        def advance(n: int = 1) -> None:
            done["n"] += n
            pct = int(100 * done["n"] / total) if total else 0
            if total and pct // 10 != done["shown"]:
                done["shown"] = pct // 10
                console.print(f"  {description}: {done['n']}/{total} ({pct}%)", highlight=False)

        yield advance
        return
    cols = [TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=False) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)
