"""Progress display for long work, silent with ``--quiet``.

Stages never import rich: they report through the engine's event stream (lorapipe.events), and
:class:`ConsoleProgress` is the subscriber that draws it in a terminal. :func:`bar` serves commands
that are not stages (``predict``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


class ConsoleProgress:
    """The terminal's view of the engine's event stream (one subscriber among others).

    Stage lines (started / skipped / done), one progress bar per phase (plain lines every ~10 % when
    stderr is not a terminal), training loss on the bar, messages and warnings. Silent with --quiet.
    """

    def __init__(self, messages: bool = True) -> None:
        self.messages = messages  # off when the command prints the same result on stdout itself
        self._bar: contextlib.ExitStack | None = None
        self._key: tuple[str | None, str] | None = None
        self._advance: Callable[[int], None] | None = None
        self._done = 0

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._key, self._advance = None, None, None

    def __call__(self, event: dict) -> None:
        t, stage = event["type"], event.get("stage")
        if t == "progress":
            key = (stage, event["phase"])
            if key != self._key:
                self.close()
                self._bar = contextlib.ExitStack()
                self._advance = self._bar.enter_context(bar(event["phase"], event.get("total")))
                self._key, self._done = key, 0
            if event["n"] > self._done and self._advance is not None:
                self._advance(event["n"] - self._done)
                self._done = event["n"]
            return
        if t in ("train_metrics", "eval_metrics") and not sys.stderr.isatty():
            loss = event.get("loss", event.get("eval_loss"))
            if loss is not None:
                say(f"  [dim]{t.split('_')[0]} step {event.get('step')}/{event.get('total_steps')}: "
                    f"loss {loss:.4g}[/]")
            return
        if t in ("stage_started", "stage_skipped", "stage_finished", "stage_failed", "run_finished"):
            self.close()
        if t == "stage_started":
            why = ", ".join(event.get("why") or [])
            say(f"[bold cyan]▶ {stage}[/]" + (f" [dim]({why})[/]" if why else ""))
        elif t == "stage_skipped":
            say(f"[green]✓[/] {stage}: up to date (skipped)")
        elif t == "stage_finished":
            say(f"[green]✓[/] {stage} done in {event['seconds']:.0f} s")
        elif t == "message" and self.messages:
            say(event["text"])
        elif t == "warning":
            say(f"[yellow]warning:[/] {event['text']}")
