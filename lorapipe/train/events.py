"""Training progress as engine events: a ``TrainerCallback`` that emits ``progress``, ``train_metrics``
and ``eval_metrics`` to a :class:`lorapipe.events.EventBus` (only on the main process)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from lorapipe.events import EventBus


class EventsCallback(TrainerCallback):
    def __init__(self, bus: EventBus, stage: str = "train"):
        self.bus, self.stage = bus, stage
        self._tick: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            self._tick = self.bus.progress(self.stage)("train: optimizer steps", state.max_steps)
            if state.global_step:  # resumed from a checkpoint
                self._tick(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._tick is not None:
            self._tick(1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        where = {"step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch}
        if any(k.startswith("eval_") for k in logs):
            self.bus.emit("eval_metrics", self.stage, **{**where, **logs})
        elif "loss" in logs:
            self.bus.emit("train_metrics", self.stage, **{**where, **logs})
