"""Train in a child process, so the process that goes on to decode keeps a clean heap.

Why: training allocates and frees activations of every length; glibc's malloc arena of the thread
that trained stays fragmented afterwards, and every later tensor op in that thread pays for it (the
demo's A/B decoding ran ~20 % slower right after training than in a fresh process; ``gc`` and
``malloc_trim`` do not give it back). Training on another *thread* of the same process avoids the
arena but not OpenMP: two threads owning OpenMP pools on a small machine throttle each other's
spin-waits, and training got ~30 % slower. A child process has neither problem.

The child is a ``multiprocessing`` *spawn* (a fresh interpreter: no fork of a process with OpenMP
threads), gets the config as an object (``--set`` overrides and in-memory configs included), and
sends back, over a pipe, the engine events it emits (progress, training and eval metrics, warnings)
and then the stage's manifest or its exception. The parent re-emits the events on its own bus, so
every subscriber (terminal, ``events.jsonl``, the jobs API) sees what an in-process run shows, and
raises the child's exception as the same :class:`~lorapipe.errors.LorapipeError` class (the CLI's
exit codes hold). The child dies with its parent (``PR_SET_PDEATHSIG``; ``terminate`` on an
interrupt); ``$LORAPIPE_STOP_FILE`` and every other variable reach it through the environment.
"""

from __future__ import annotations

import ctypes
import logging
import pickle
import signal
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorapipe.errors import LorapipeError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from lorapipe.config import PipelineConfig
    from lorapipe.events import EventBus
    from lorapipe.manifest import Manifest

log = logging.getLogger(__name__)
_OWN = ("seq", "ts", "run", "type", "stage")  # set again by the parent's bus


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's terminate() on the way out still applies
        pass


def run(cfg: PipelineConfig, train_file: Path, eval_file: Path | None, out: Path, *, resume: bool | str,
        bus: EventBus, stage: str = "train") -> Manifest:
    """:func:`lorapipe.train.trainer.run` in a spawned child, its events relayed to ``bus``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(cfg, train_file, eval_file, out, resume, stage, send),
                       name=f"lorapipe-{stage}", daemon=True)
    proc.start()
    send.close()  # the parent's copy: EOF on `receive` once the child has gone
    result: tuple[str, Any] | None = None
    try:
        while result is None:
            try:
                kind, payload = receive.recv()
            except EOFError:
                break
            if kind == "event":
                type_, data = payload
                bus.emit(type_, stage, **data)
            else:
                result = (kind, payload)
        proc.join()
    finally:
        receive.close()
        if proc.is_alive():  # interrupted here (Ctrl-C, a stop): the child goes too
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if result is None:
        raise LorapipeError(f"{stage}: the training process ended without a result (exit code {proc.exitcode}"
                            f"{', killed by signal ' + str(-proc.exitcode) if (proc.exitcode or 0) < 0 else ''}); "
                            "rerun the same command to resume from the newest checkpoint")
    kind, payload = result
    if kind == "error":
        raise _exception(payload)
    return payload  # type: ignore[no-any-return]


def _child(cfg: PipelineConfig, train_file: Path, eval_file: Path | None, out: Path, resume: bool | str,
           stage: str, send: Connection) -> None:
    die_with_parent()
    from lorapipe.events import EventBus
    from lorapipe.train import trainer
    from lorapipe.train.events import EventsCallback

    bus = EventBus()
    bus.subscribe(lambda e: send.send(("event", (e["type"], {k: v for k, v in e.items() if k not in _OWN}))))
    handler = _LogToEvents(bus, stage)
    logging.getLogger("lorapipe").addHandler(handler)  # warnings reach the parent's stream as events
    try:
        manifest = trainer.run(cfg, train_file, eval_file, out, resume=resume,
                               callbacks=[EventsCallback(bus, stage)])
        send.send(("manifest", manifest))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent, which raises it
        if not isinstance(e, (LorapipeError, KeyboardInterrupt)):  # a bug: keep where it happened
            e.add_note("in the training process:\n" + "".join(traceback.format_exception(e)).rstrip())
        send.send(("error", _portable(e)))
    finally:
        send.close()


class _LogToEvents(logging.Handler):
    def __init__(self, bus: EventBus, stage: str):
        super().__init__(logging.WARNING)
        self.bus, self.stage = bus, stage

    def emit(self, record: logging.LogRecord) -> None:
        self.bus.emit("warning", self.stage, text=record.getMessage(), logger=record.name)


def _portable(e: BaseException) -> tuple[str, Any]:
    """The exception itself when it survives pickling, else its type and message with the traceback."""
    try:
        blob = pickle.dumps(e)
        pickle.loads(blob)
        return ("pickled", blob)
    except Exception:  # noqa: BLE001 - an exception class with an unusual constructor
        return ("text", f"{type(e).__name__}: {e}")


def _exception(payload: tuple[str, Any]) -> BaseException:
    kind, value = payload
    if kind == "pickled":
        e = pickle.loads(value)
        if isinstance(e, BaseException):
            return e
    return LorapipeError(f"training failed in its process: {value}")
