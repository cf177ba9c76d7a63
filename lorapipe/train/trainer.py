"""The train stage: PEFT LoRA on the Hugging Face Trainer.

``run(cfg, train_file, eval_file, out_dir)`` writes::

    out_dir/checkpoints/checkpoint-N/   Trainer checkpoints (resume from the newest)
    out_dir/adapter/                    adapter_config.json, adapter_model.safetensors, manifest.json
    out_dir/trainer_log.json            the Trainer's log history (losses, learning rate, eval loss)
    out_dir/manifest.json               the stage manifest

The adapter directory is written to a temporary path and renamed into place, so it is either the
previous complete adapter or the new complete one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import read_rows
from lorapipe.errors import ConfigError, DataError
from lorapipe.manifest import Manifest, atomic_dir, atomic_write_json, sha256_file, sha256_json

log = logging.getLogger(__name__)


class _Rows:
    """A list of encoded rows as a torch-style map dataset."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _check_hardware(cfg: PipelineConfig) -> None:
    import torch

    from lorapipe.train.distributed import bf16_supported

    problems = []
    if cfg.train.bf16 is True and not bf16_supported():
        problems.append("train.bf16: true, but this machine has neither a bf16-capable GPU nor a CPU with "
                        "bf16 matrix units (AMX); use `auto` or false")
    if cfg.lora.quantization and not torch.cuda.is_available():
        problems.append(f"lora.quantization: `{cfg.lora.quantization}` (QLoRA) needs a CUDA GPU with "
                        "bitsandbytes; remove it to train the full-precision base on this machine")
    if problems:
        raise ConfigError("the config does not fit this machine:", problems)


# Fields that may change between a checkpoint and its resumption without making it another run.
_RESUMABLE_FIELDS = {"max_steps", "num_train_epochs", "eval_steps", "save_steps", "logging_steps",
                     "save_total_limit", "report_to", "dataloader_num_workers", "per_device_eval_batch_size",
                     # speed switches that do not change the numbers (tests/unit/test_train_speed.py)
                     "loss_only_on_labels", "torch_compile", "gradient_checkpointing"}


def _checkpoints_for(cfg: PipelineConfig, info, train_file: Path, eval_file: Path | None, out_dir: Path,
                     resume: bool | str) -> Path | None:
    """The newest checkpoint of *this* run (same data, base and config); stale ones are removed.

    Checkpoints carry a key of what shaped them, so `auto` resumption never continues a run made
    with other data or hyper-parameters.
    """
    import shutil

    ckpt_dir = out_dir / "checkpoints"
    key = sha256_json({"base": info.weights_sha256, "lora": cfg.lora.model_dump(mode="json"),
                       "train": {k: v for k, v in cfg.train.model_dump(mode="json").items()
                                 if k not in _RESUMABLE_FIELDS},
                       "system": cfg.task.system_prompt, "data": [sha256_file(train_file)] +
                       ([sha256_file(eval_file)] if eval_file else [])})
    key_file = ckpt_dir / "lorapipe_key.json"
    old_key = json.loads(key_file.read_text())["key"] if key_file.is_file() else None
    if ckpt_dir.is_dir() and old_key != key:
        if resume is True:
            raise DataError(f"{ckpt_dir}: the checkpoints there come from other data or another config; "
                            "run without --resume to start over")
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(key_file, {"key": key})
    return newest_checkpoint(ckpt_dir)


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def training_arguments(cfg: PipelineConfig, out_dir: Path, has_eval: bool, n_train: int):
    from transformers import TrainingArguments

    from lorapipe.train.distributed import bf16_supported

    t = cfg.train
    bf16 = bf16_supported() if t.bf16 == "auto" else bool(t.bf16)
    # The best-model logic needs saves on eval steps; keep them aligned whatever the user wrote.
    save_steps = t.save_steps if not (has_eval and t.load_best_model_at_end) else t.eval_steps
    steps_per_epoch = math.ceil(n_train / (t.per_device_train_batch_size * t.gradient_accumulation_steps
                                           * int(os.environ.get("WORLD_SIZE", "1"))))
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=max(0, round(t.warmup_ratio * (t.max_steps if t.max_steps > 0 else
                                                     steps_per_epoch * t.num_train_epochs))),
        lr_scheduler_type=t.lr_scheduler_type,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_eval and t.load_best_model_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        bf16=bf16,
        use_cpu=not _cuda(),
        seed=t.seed,
        data_seed=t.seed,
        report_to=[r for r in t.report_to if r != "none"] or "none",
        # Packed micro-batches have no padding, so there is nothing for length grouping to save.
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        prediction_loss_only=True,  # eval needs the loss only: no logits gathered, label-only head
        remove_unused_columns=False,
        torch_compile=t.torch_compile,
        activation_checkpointing=t.gradient_checkpointing,
        dataloader_num_workers=t.dataloader_num_workers,
        save_only_model=False,
        ddp_find_unused_parameters=False,  # every LoRA weight is used; the search costs a graph walk a step
        disable_tqdm=False,
    )


def _final_eval_loss(trainer) -> float | None:
    """The eval loss of the weights training ended with, read from the Trainer's own evaluations.

    The Trainer evaluates on every eval step and at the last step, and with ``load_best_model_at_end``
    reloads the best of them, so evaluating once more would recompute a number it already has (on
    the demo, half a minute of CPU). None when no evaluation of those weights was logged.
    """
    state = trainer.state
    if trainer.args.load_best_model_at_end and state.best_metric is not None:
        return float(state.best_metric)
    for entry in reversed(state.log_history):
        if "eval_loss" in entry and entry.get("step") == state.global_step:
            return float(entry["eval_loss"])
    return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(cfg: PipelineConfig, train_file: Path, eval_file: Path | None, out_dir: Path,
        resume: bool | str = "auto", model_and_tokenizer: tuple | None = None,
        callbacks: list[Any] | None = None) -> Manifest:
    """Train a LoRA adapter on ``train_file`` (canonical rows), evaluating on ``eval_file``.

    ``resume``: ``"auto"`` continues from the newest checkpoint when one exists, ``True`` requires
    one, ``False`` starts over. ``callbacks`` are added to the HF Trainer (the engine's event stream).
    """
    import torch
    from transformers import set_seed

    from lorapipe import models
    from lorapipe.train import distributed, speed
    from lorapipe.train.collate import DataCollator, encode_rows
    from lorapipe.train.lora import apply_lora

    _check_hardware(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if torch.get_num_threads() > (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)

    info = models.resolve(cfg.base_model)
    if model_and_tokenizer is None:
        if cfg.lora.quantization:  # QLoRA: a 4/8-bit base on this rank's GPU, prepared for k-bit training
            from lorapipe.train.quant import load_quantized

            model, tokenizer = load_quantized(cfg, info), models.load_tokenizer(info)
        else:
            model, tokenizer = models.load_model(info), models.load_tokenizer(info)
    else:
        model, tokenizer = model_and_tokenizer

    system = cfg.task.system_prompt
    cap = cfg.data.max_line_bytes
    train_rows = read_rows(train_file, system_prompt=system, max_line_bytes=cap)
    eval_rows = (read_rows(eval_file, system_prompt=system, max_line_bytes=cap)
                 if eval_file and Path(eval_file).is_file() else [])
    train_enc, train_stats = encode_rows(tokenizer, train_rows, cfg.train.max_seq_length)
    eval_enc, eval_stats = encode_rows(tokenizer, eval_rows, cfg.train.max_seq_length)
    if not train_enc:
        raise DataError(f"{train_file}: no trainable rows: every reply was truncated away at "
                        f"train.max_seq_length={cfg.train.max_seq_length}; raise it")
    if train_stats["truncated"]:
        log.warning("%d of %d training rows were longer than train.max_seq_length=%d and were truncated",
                    train_stats["truncated"], len(train_rows), cfg.train.max_seq_length)

    set_seed(cfg.train.seed)  # the LoRA init is drawn here: same seed, same adapter
    model = apply_lora(cfg.lora, model)
    if cfg.train.gradient_checkpointing:
        model.enable_input_require_grads()

    if "tensorboard" in cfg.train.report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out_dir / "logs"))
    # Under accelerate each rank accumulates 1/N of the micro-batches (distributed.keep_global_batch);
    # the manifest keeps the hash of the config as written, so 1 or N processes are the same run.
    world_cfg, layout = distributed.adapt_to_world(cfg)
    if layout.processes > 1 and distributed.rank() == 0:
        log.warning("%s", layout.describe())
    args = training_arguments(world_cfg, out_dir, bool(eval_enc), len(train_enc))
    trainer = speed.trainer_class()(model=model, args=args, train_dataset=_Rows(train_enc),
                                    eval_dataset=_Rows(eval_enc) if eval_enc else None,
                                    data_collator=DataCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                    callbacks=callbacks)
    # Label-only head, packing: see lorapipe/train/speed.py (sets the collator and trainer.speed_plan)
    speed.apply(cfg.train, trainer, tokenizer.pad_token_id, sharded=bool(
        getattr(trainer, "is_fsdp_enabled", False)
        or (getattr(trainer, "is_deepspeed_enabled", False) and world_cfg.distributed.zero_stage == 3)))

    # Rank 0 checks the checkpoints' key (and clears stale ones) while the other ranks wait, then every
    # rank resumes from the same newest checkpoint.
    if trainer.is_world_process_zero():
        _checkpoints_for(cfg, info, train_file, eval_file if eval_rows else None, out_dir, resume)
    trainer.accelerator.wait_for_everyone()
    ckpt = newest_checkpoint(out_dir / "checkpoints")
    if resume is True and ckpt is None:
        raise DataError(f"{out_dir / 'checkpoints'}: no checkpoint to resume from; run without --resume")
    resume_from = str(ckpt) if (resume and ckpt is not None) else None
    if resume_from:
        log.warning("resuming from %s", resume_from)
    # The Trainer prints its log dicts to stdout; keep stdout for results (`--json`) and log to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=resume_from)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "global_steps": result.global_step,
                               "train_runtime_s": result.metrics.get("train_runtime")}
    if eval_enc:
        eval_loss = _final_eval_loss(trainer)
        if eval_loss is None:
            with contextlib.redirect_stdout(sys.stderr):
                eval_loss = trainer.evaluate()["eval_loss"]
        metrics["eval_loss"] = eval_loss
        metrics["eval_perplexity"] = math.exp(min(eval_loss, 50))
    speed.undo(model, trainer.speed_plan)
    metrics["train_tokens"] = sum(len(r["input_ids"]) for r in train_enc)
    metrics["train_label_tokens"] = sum(sum(1 for x in r["labels"] if x != -100) for r in train_enc)

    if trainer.is_world_process_zero():
        atomic_write_json(out_dir / "trainer_log.json", trainer.state.log_history)
    inputs = {"train.jsonl": sha256_file(train_file)}
    if eval_rows:
        inputs["eval.jsonl"] = sha256_file(eval_file)
    manifest_kw = dict(
        stage="train", config_hash=cfg.section_hash("task", "base_model", "lora", "train"), inputs=inputs,
        config=cfg.resolved(), metrics=metrics,
        extra={"base_model": info.identity(), "encode": {"train": train_stats, "eval": eval_stats},
               "global_batch": layout.global_batch, "processes": layout.processes,
               "mixed_precision": "bf16" if args.bf16 else "no",
               "speed": trainer.speed_plan.describe()},
    )
    state = distributed.gather_state_dict(trainer)  # collective under FSDP / ZeRO-3, None otherwise
    if trainer.is_world_process_zero():
        with atomic_dir(out_dir / "adapter") as tmp:
            distributed.unwrap(trainer).save_pretrained(tmp, state_dict=state)
            Manifest(**manifest_kw).save(tmp)
    manifest = Manifest(**manifest_kw)
    if trainer.is_world_process_zero():
        manifest.save(out_dir)
    return manifest
