"""A fine-tuning job as an engine run: its pipeline config, and its events read back as OpenAI's.

A job is an ordinary lorapipe run that anyone can repeat by hand::

    jobs/<ftjob-id>/pipeline.yaml     generated: base = the server's model, data.train_file = the rows
    jobs/<ftjob-id>/training.jsonl    the checked rows (canonical chat messages, `weight` kept)
    jobs/<ftjob-id>/validation.jsonl  the validation rows, when the job has a validation file
    jobs/<ftjob-id>/run/              the engine's run dir: events.jsonl, split/, train/ (checkpoints, adapter)

The worker runs ``python -m lorapipe --json train jobs/<id>/pipeline.yaml`` (split, then train),
the same command a user would. Hyperparameters map onto the ``train`` section; ``auto`` keeps
lorapipe's default: ``n_epochs`` -> ``num_train_epochs`` (3), ``batch_size`` -> rows per optimizer
step (default 4 x 4 accumulated = 16), ``learning_rate_multiplier`` x ``train.learning_rate`` (2e-4).
Like OpenAI, a job checkpoints at the end of every epoch and keeps the last weights (not the best).

The A/B ``evaluate`` stage is *not* run for jobs: uploaded rows come without a rubric, so its
judge-free scores would say little, and it would generate for minutes on a CPU. The validation
loss, token accuracy and perplexity come from the train stage's evaluation of the validation rows.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import yaml

from lorapipe.config import TrainConfig

RUN_DIR = "run"
CONFIG_FILE = "pipeline.yaml"
TRAIN_ROWS, VALID_ROWS = "training.jsonl", "validation.jsonl"
STOP_FILE = "STOP"  # present: the trainer stops at its next step with a checkpoint (pause)
CSV_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
DEFAULT_EPOCHS = TrainConfig.model_fields["num_train_epochs"].default
DEFAULT_LR = TrainConfig.model_fields["learning_rate"].default
DEFAULT_BATCH = (TrainConfig.model_fields["per_device_train_batch_size"].default
                 * TrainConfig.model_fields["gradient_accumulation_steps"].default)
EVAL_FRACTION = 0.1


def slug(text: str, limit: int = 64) -> str:
    """``text`` as a model-name part: letters, digits, ``_ . -`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit] or "x"


def model_name(base: str, org: str, suffix: str | None, job_id: str) -> str:
    """``ft:{base}:{org}:{suffix}:{id}``, OpenAI's shape (id = the job id's first 8 hex digits)."""
    return f"ft:{slug(base)}:{slug(org)}:{slug(suffix) if suffix else ''}:{job_id.split('-', 1)[-1][:8]}"


def resolve_hyperparameters(asked: dict[str, Any]) -> dict[str, Any]:
    """``auto`` (or absent) -> the number lorapipe's defaults amount to, as OpenAI reports them."""
    def pick(key: str, default: Any) -> Any:
        v = asked.get(key, "auto")
        return default if v in (None, "auto") else v

    return {"n_epochs": pick("n_epochs", int(DEFAULT_EPOCHS)), "batch_size": pick("batch_size", DEFAULT_BATCH),
            "learning_rate_multiplier": pick("learning_rate_multiplier", 1.0)}


def write_job(job_dir: Path, job: dict[str, Any], base_spec: str, examples: int, longest_tokens: int,
              max_context: int, has_validation: bool) -> Path:
    """Write the job's ``pipeline.yaml`` (the rows are written by the caller); return its path."""
    hp = job["hyperparameters"]
    train_rows = examples if has_validation else max(1, examples - max(1, round(examples * EVAL_FRACTION)))
    train: dict[str, Any] = {"num_train_epochs": hp["n_epochs"],
                             "learning_rate": DEFAULT_LR * hp["learning_rate_multiplier"],
                             "seed": job["seed"], "logging_steps": 1, "save_total_limit": 3,
                             "load_best_model_at_end": False, "report_to": ["none"],
                             "max_seq_length": max(16, min(max_context, max(512, longest_tokens)))}
    batch = hp["batch_size"]
    if batch != DEFAULT_BATCH:
        train.update(per_device_train_batch_size=batch, gradient_accumulation_steps=1)
    per_epoch = max(1, math.ceil(train_rows / batch))
    train.update(eval_steps=per_epoch, save_steps=per_epoch)  # evaluate and checkpoint once per epoch
    data: dict[str, Any] = {"train_file": TRAIN_ROWS}
    if has_validation:
        data["eval_file"] = VALID_ROWS
    cfg = {"task": {"name": job["id"], "description": f"OpenAI fine-tuning job {job['id']}", "system_prompt": ""},
           "base_model": base_spec, "output_dir": RUN_DIR, "data": data, "probe": {"enabled": False},
           "split": {"seed": job["seed"] % 2**31, "eval_fraction": EVAL_FRACTION}, "train": train}
    path = job_dir / CONFIG_FILE
    header = (f"# lorapipe --json train {CONFIG_FILE}\n# fine-tuning job {job['id']}, written by lorapipe serve; "
              "running this command resumes it.\n")
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- events
def _round(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def to_job_events(e: dict[str, Any], latest: dict[str, Any]) -> list[tuple[str, str, str, dict | None]]:
    """One engine event as (level, type, message, data) fine-tuning events; ``latest`` carries the last
    train metrics so a validation event reports them too."""
    t, stage = e.get("type"), e.get("stage")
    if t == "train_metrics":
        data = {"step": e.get("step"), "total_steps": e.get("total_steps"), "train_loss": _round(e.get("loss")),
                "train_mean_token_accuracy": _round(e.get("mean_token_accuracy"))}
        latest.update(data)
        step = f"Step {e.get('step')}/{e.get('total_steps')}"
        return [("info", "metrics", f"{step}: training loss={data['train_loss']}", data)]
    if t == "eval_metrics":
        data = {**latest, "step": e.get("step"), "total_steps": e.get("total_steps"),
                "valid_loss": _round(e.get("eval_loss")),
                "valid_mean_token_accuracy": _round(e.get("eval_mean_token_accuracy"))}
        step = f"Step {e.get('step')}/{e.get('total_steps')}"
        return [("info", "metrics", f"{step}: validation loss={data['valid_loss']}", data)]
    if t == "stage_started" and stage in ("split", "train"):
        text = {"split": "Splitting the training file into training and validation examples",
                "train": "Fine-tuning started"}[stage]
        return [("info", "message", text, None)]
    if t == "stage_finished" and stage in ("split", "train"):
        m = e.get("metrics") or {}
        shown = ", ".join(f"{k}={_round(v)}" for k, v in m.items() if isinstance(v, (int, float)))
        return [("info", "message", f"{stage.capitalize()} finished" + (f": {shown}" if shown else ""), None)]
    if t in ("stage_failed",) and e.get("error_type") != "StopRequested":
        return [("error", "message", f"{stage or 'run'} failed: {e.get('error')}", None)]
    if t == "warning":
        return [("warn", "message", str(e.get("text")), None)]
    if t == "message":
        return [("info", "message", str(e.get("text")), None)]
    return []


def event_time(e: dict[str, Any]) -> int:
    try:
        return calendar.timegm(time.strptime(str(e["ts"])[:19], "%Y-%m-%dT%H:%M:%S"))  # ts is UTC
    except (KeyError, ValueError):
        return int(time.time())


# ----------------------------------------------------------------------------------- checkpoints
def _metrics_at(history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    out: dict[str, Any] = {"step": step}
    for entry in history:
        if entry.get("step", 0) > step:
            break
        if "loss" in entry:
            out["train_loss"] = _round(entry["loss"])
            out["train_mean_token_accuracy"] = _round(entry.get("mean_token_accuracy"))
        if "eval_loss" in entry and entry.get("step") == step:
            out["valid_loss"] = _round(entry["eval_loss"])
            out["valid_mean_token_accuracy"] = _round(entry.get("eval_mean_token_accuracy"))
    return out


def checkpoints(run_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """(step, metrics) of each complete checkpoint the trainer has written, oldest first."""
    found = []
    for p in (run_dir / "train" / "checkpoints").glob("checkpoint-*"):
        state = p / "trainer_state.json"
        if not p.name.split("-")[-1].isdigit() or not state.is_file():
            continue
        try:
            history = json.loads(state.read_text()).get("log_history") or []
        except (OSError, ValueError):
            continue  # being written right now: the next scan sees it whole
        step = int(p.name.split("-")[-1])
        found.append((step, _metrics_at(history, step)))
    return sorted(found)


def results_csv(run_dir: Path) -> bytes:
    """``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy``: one row per logged step."""
    log = run_dir / "train" / "trainer_log.json"
    history = json.loads(log.read_text()) if log.is_file() else []
    rows: dict[int, dict[str, Any]] = {}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        row = rows.setdefault(int(step), {"step": int(step)})
        if "loss" in entry:
            row.update(train_loss=entry["loss"], train_accuracy=entry.get("mean_token_accuracy"))
        if "eval_loss" in entry:
            row.update(valid_loss=entry["eval_loss"], valid_mean_token_accuracy=entry.get("eval_mean_token_accuracy"))
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_HEADER, lineterminator="\n")
    w.writeheader()
    for step in sorted(rows):
        w.writerow({k: ("" if rows[step].get(k) is None else rows[step][k]) for k in CSV_HEADER})
    return buf.getvalue().encode()


__all__ = ["CONFIG_FILE", "CSV_HEADER", "RUN_DIR", "STOP_FILE", "TRAIN_ROWS", "VALID_ROWS", "checkpoints",
           "event_time", "model_name", "resolve_hyperparameters", "results_csv", "slug", "to_job_events",
           "write_job"]
