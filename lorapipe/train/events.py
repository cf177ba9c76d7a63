"""Training progress as engine events: a ``TrainerCallback`` that emits ``progress``, ``train_metrics``
and ``eval_metrics`` to a :class:`lorapipe.events.EventBus` (only on the main process).

It also stops a run *at a checkpoint* on request: when the file named by ``$LORAPIPE_STOP_FILE``
exists after an optimizer step, the trainer saves a checkpoint and the stage ends with
:class:`StopRequested` (no adapter, no manifest), so running the same command again resumes from
that checkpoint. The fine-tuning jobs API pauses a job this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lorapipe.errors import LorapipeError
from lorapipe.events import EventBus

STOP_FILE_ENV = "LORAPIPE_STOP_FILE"


class StopRequested(LorapipeError):
    """Training stopped at a checkpoint because the stop file appeared; rerun to resume."""


class EventsCallback(TrainerCallback):
    def __init__(self, bus: EventBus, stage: str = "train", stop_file: str | Path | None = None):
        self.bus, self.stage = bus, stage
        self._tick: Any = None
        stop_file = stop_file or os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(stop_file) if stop_file else None
        self._stopping = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            self._tick = self.bus.progress(self.stage)("train: optimizer steps", state.max_steps)
            if state.global_step:  # resumed from a checkpoint
                self._tick(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._tick is not None:
            self._tick(1)
        if self.stop_file is not None and self.stop_file.exists():
            control.should_save = True  # the checkpoint is written right after this step, then on_save stops
            self._stopping = True

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._stopping:
            raise StopRequested(f"training stopped at step {state.global_step} because {self.stop_file} exists; "
                                "remove it and run the same command again to resume from that checkpoint")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        where = {"step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch}
        if any(k.startswith("eval_") for k in logs):
            self.bus.emit("eval_metrics", self.stage, **{**where, **logs})
        elif "loss" in logs:
            self.bus.emit("train_metrics", self.stage, **{**where, **logs})
