"""Train in a child process, so the process that goes on to decode keeps a clean heap.

Why: training allocates and frees activations of every length; glibc's malloc arena of the thread
that trained stays fragmented afterwards, and every later tensor op in that thread pays for it (the
demo's A/B decoding ran ~20 % slower right after training than in a fresh process; ``gc`` and
``malloc_trim`` do not give it back). Training on another *thread* of the same process avoids the
arena but not OpenMP: two threads owning OpenMP pools on a small machine throttle each other's
spin-waits, and training got ~30 % slower. A child process has neither problem.

The child is ``python -m lorapipe.train.child`` (a fresh interpreter: no fork of a process with
OpenMP threads, and unlike ``multiprocessing``'s spawn it never re-runs the caller's script). It reads
the job, pickled, on stdin (the config object itself: ``--set`` overrides and in-memory configs
included, plus the caller's warning filters and logging) and writes back, on a pipe of its own, the
engine events it emits (progress, training and eval metrics, warnings) and then the stage's manifest
or its exception. The parent re-emits the events on its own bus, so every subscriber (terminal,
``events.jsonl``, the jobs API) sees what an in-process run shows, and raises the child's exception
as the same :class:`~lorapipe.errors.LorapipeError` class (the CLI's exit codes hold); a bug keeps the
child's traceback as a note. The child dies with its parent (``PR_SET_PDEATHSIG``; ``terminate`` on
an interrupt); ``$LORAPIPE_STOP_FILE`` and every other variable reach it through the environment.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorapipe.errors import LorapipeError

if TYPE_CHECKING:
    from lorapipe.config import PipelineConfig
    from lorapipe.events import EventBus
    from lorapipe.manifest import Manifest

_OWN = ("seq", "ts", "run", "type", "stage")  # set again by the parent's bus


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's terminate() on the way out still applies
        pass


def run(cfg: PipelineConfig, train_file: Path, eval_file: Path | None, out: Path, *, resume: bool | str,
        bus: EventBus, stage: str = "train") -> Manifest:
    """:func:`lorapipe.train.trainer.run` in a child process, its events relayed to ``bus``."""
    import lorapipe

    # A new interpreter starts with default warning filters and logging: give it the CLI's (no
    # FutureWarnings; library logs with --verbose).
    root = logging.getLogger()
    fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter else None
    job = pickle.dumps({"cfg": cfg, "train_file": train_file, "eval_file": eval_file, "out": out, "resume": resume,
                        "stage": stage, "filters": list(warnings.filters),
                        "logs": (root.level, fmt) if root.handlers else None})
    env = dict(os.environ)  # lorapipe importable as this process imports it (a checkout, a test's path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(lorapipe.__file__).parents[1]),
                                                      env.get("PYTHONPATH")]))
    receive, send = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "lorapipe.train.child", str(send), str(os.getpid())],
                            stdin=subprocess.PIPE, pass_fds=(send,), env=env)
    os.close(send)  # the child's copy stays open: EOF here once it has gone
    result: tuple[str, Any] | None = None
    try:
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(job)
        except BrokenPipeError:  # it exited before reading: said below, with its exit code
            pass
        with os.fdopen(receive, "rb") as messages:
            while result is None:
                try:
                    kind, payload = pickle.load(messages)
                except (EOFError, pickle.UnpicklingError):  # gone, or killed in the middle of a message
                    break
                if kind == "event":
                    type_, data = payload
                    bus.emit(type_, stage, **data)
                else:
                    result = (kind, payload)
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted here (Ctrl-C, a stop): the child goes too
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if result is None:
        rc = proc.returncode
        raise LorapipeError(f"{stage}: the training process ended without a result (exit code {rc}"
                            f"{', killed by signal ' + str(-rc) if rc < 0 else ''}); "
                            "rerun the same command to resume from the newest checkpoint")
    kind, payload = result
    if kind == "error":
        raise _exception(payload)
    return payload  # type: ignore[no-any-return]


def main(argv: list[str]) -> None:
    """The child: ``python -m lorapipe.train.child FD PARENT_PID``, the pickled job on stdin."""
    die_with_parent()
    if os.getppid() != int(argv[1]):  # the parent died before PR_SET_PDEATHSIG was in place
        sys.exit(1)
    job = pickle.load(sys.stdin.buffer)
    warnings.filters[:] = job["filters"]
    if job["logs"] is not None:
        logging.basicConfig(level=job["logs"][0], format=job["logs"][1])
    from lorapipe.events import EventBus, WarningsToEvents
    from lorapipe.train import trainer
    from lorapipe.train.events import EventsCallback

    stage = job["stage"]
    with os.fdopen(int(argv[0]), "wb") as out:
        def send(message: tuple[str, Any]) -> None:
            pickle.dump(message, out)
            out.flush()

        bus = EventBus()
        bus.subscribe(lambda e: send(("event", (e["type"], {k: v for k, v in e.items() if k not in _OWN}))))
        logging.getLogger("lorapipe").addHandler(WarningsToEvents(bus, lambda: stage))  # to the parent too
        try:
            manifest = trainer.run(job["cfg"], job["train_file"], job["eval_file"], job["out"],
                                   resume=job["resume"], callbacks=[EventsCallback(bus, stage)])
            send(("manifest", manifest))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent, which raises it
            if not isinstance(e, (LorapipeError, KeyboardInterrupt)):  # a bug: keep where it happened
                e.add_note("in the training process:\n" + "".join(traceback.format_exception(e)).rstrip())
            send(("error", _portable(e)))


def _portable(e: BaseException) -> tuple[str, Any]:
    """The exception itself when it survives pickling, else its type and message."""
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


if __name__ == "__main__":
    main(sys.argv[1:])
