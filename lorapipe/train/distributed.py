"""Multi-process training on existing engines: accelerate with DDP, FSDP or DeepSpeed ZeRO-2/3.

lorapipe has no distributed runtime of its own. ``lorapipe train CONFIG --launcher accelerate
--num-processes N`` writes an accelerate config from the ``distributed`` section (or uses the
user's own ``distributed.config_file``) and re-executes itself as::

    python -m accelerate.commands.launch --config_file RUN_DIR/launch/accelerate.yaml \\
        --num_processes N -m lorapipe train CONFIG ...

which is what ``accelerate launch -m lorapipe train CONFIG`` does by hand. Every rank then runs the
ordinary train stage; the HF Trainer (through accelerate) shards the data, all-reduces the gradients
and writes checkpoints that a rerun resumes from. Only rank 0 writes the adapter, the manifests
and the trainer log.

The global batch (per-device batch x accumulation x processes) is kept equal to the single-process
one: with ``distributed.keep_global_batch`` (the default) each rank accumulates
``train.gradient_accumulation_steps / N`` micro-batches. Without a GPU the processes talk over
gloo on the CPU (accelerate's ``use_cpu: true``), which is how the tests run.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lorapipe.config import PipelineConfig
from lorapipe.errors import ConfigError
from lorapipe.manifest import atomic_write, atomic_write_json

__all__ = ["Layout", "accelerate_config", "adapt_to_world", "deepspeed_config", "gather_state_dict",
           "in_launched_process", "launch", "launch_argv", "layout", "rank", "relaunch_argv", "strip_launch_options",
           "unwrap", "world_size", "write_launch_config"]

LAUNCHED_ENV = "LORAPIPE_LAUNCHED"  # set in the children, so a child never launches again


# ---------------------------------------------------------------------------------- the world
def world_size() -> int:
    """Processes in this training job (1 outside a launched job)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside a launched job)."""
    return int(os.environ.get("RANK", "0"))


def in_launched_process() -> bool:
    """True inside ``accelerate launch``/``torchrun`` (ours or the user's): never launch again."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one optimizer step's rows are split: per device x accumulation x processes."""

    per_device: int
    accumulation: int
    processes: int
    single_process_accumulation: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.accumulation * self.processes

    def describe(self) -> str:
        single = self.per_device * self.single_process_accumulation
        same = "same as" if single == self.global_batch else "single-process run would use"
        return (f"global batch {self.global_batch} = {self.per_device} per device x {self.accumulation} accumulation"
                f" x {self.processes} process(es) ({same} {self.per_device} x {self.single_process_accumulation}"
                f" = {single} in one process)")


def layout(cfg: PipelineConfig, processes: int) -> Layout:
    """The batch layout ``processes`` ranks will use; ConfigError when the global batch cannot be kept."""
    t, d = cfg.train, cfg.distributed
    accum = t.gradient_accumulation_steps
    if processes > 1 and d.keep_global_batch:
        if accum % processes:
            multiple = processes * max(1, round(accum / processes))
            divisors = [n for n in range(2, accum + 1) if accum % n == 0]
            raise ConfigError(
                f"the global batch cannot be kept on {processes} processes:", [(
                    f"train.gradient_accumulation_steps: {accum} is not divisible by {processes} processes "
                    f"(distributed.keep_global_batch: true); set it to a multiple of {processes} "
                    f"(e.g. {multiple}), use a process count that divides it "
                    f"({', '.join(map(str, divisors)) or 'only 1'}), or set distributed.keep_global_batch: "
                    f"false to let the global batch grow {processes}-fold")])
        accum //= processes
    return Layout(t.per_device_train_batch_size, accum, processes, t.gradient_accumulation_steps)


def adapt_to_world(cfg: PipelineConfig, processes: int | None = None) -> tuple[PipelineConfig, Layout]:
    """A copy of ``cfg`` whose accumulation fits ``processes`` ranks (default: this job's world size).

    The caller keeps the original ``cfg`` for hashing, so a stage trained on 1 or 8 GPUs with the
    same global batch has the same config hash.
    """
    processes = processes or world_size()
    lay = layout(cfg, processes)
    if lay.accumulation == cfg.train.gradient_accumulation_steps:
        return cfg, lay
    new = cfg.model_copy(deep=True)
    new.train.gradient_accumulation_steps = lay.accumulation
    return new, lay


# ---------------------------------------------------------------------------------- config files
def bf16_supported(cuda: bool | None = None) -> bool:
    """Whether bf16 mixed precision pays here: a bf16-capable GPU, or (without one) a CPU with AMX tiles.

    On a CPU, bf16 autocast only helps where matrix units take bf16 (Intel AMX; oneDNN then runs the
    matmuls ~7x faster than fp32: measured 468 vs 69 GFLOPS on a 2-core Sapphire Rapids VM, a LoRA
    step on SmolLM2 1.7-1.8x faster). Elsewhere it would convert in software and run slower than fp32.
    """
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    from lorapipe.models import cpu_has_amx

    return cpu_has_amx()


def _mixed_precision(cfg: PipelineConfig, cuda: bool) -> str:
    """What the Trainer will use (TrainingArguments.bf16); the launcher must say the same."""
    if cfg.train.bf16 == "auto":
        return "bf16" if bf16_supported(cuda) else "no"
    return "bf16" if cfg.train.bf16 else "no"


def deepspeed_config(cfg: PipelineConfig) -> dict[str, Any]:
    """A DeepSpeed JSON for ZeRO-2/3; ``auto`` values are filled in by the HF Trainer."""
    zero: dict[str, Any] = {"stage": cfg.distributed.zero_stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto"}
    if cfg.distributed.zero_stage == 3:
        # Without this a ZeRO-3 run cannot write a loadable adapter (weights stay partitioned).
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_prefetch_bucket_size="auto",
                    stage3_param_persistence_threshold="auto")
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto", "zero_allow_untested_optimizer": True}


def accelerate_config(cfg: PipelineConfig, num_processes: int, cuda: bool, deepspeed_file: Path | None = None,
                      ) -> dict[str, Any]:
    """The accelerate config (what ``accelerate config`` would write) for the ``distributed`` section."""
    d = cfg.distributed
    doc: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "num_machines": 1, "machine_rank": 0, "num_processes": num_processes,
        "mixed_precision": _mixed_precision(cfg, cuda), "use_cpu": not cuda, "gpu_ids": "all",
        "main_process_port": 0,  # 0: accelerate picks a free port, so two runs on one host never collide
        "rdzv_backend": "static", "same_network": True, "main_training_function": "main", "debug": False,
    }
    if d.strategy == "ddp" or not cuda:
        # MULTI_GPU makes accelerate start the ranks with torchrun; with use_cpu they use gloo on the CPU.
        doc["distributed_type"] = "MULTI_GPU" if num_processes > 1 else "NO"
    elif d.strategy == "fsdp":
        doc["distributed_type"] = "FSDP"
        doc["fsdp_config"] = {
            "fsdp_version": 1,
            # The layer class comes from the model's _no_split_modules; the Trainer swaps in PEFT's
            # policy that wraps trainable and frozen weights apart (needed with use_orig_params false).
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",  # checkpoints; the final adapter is gathered whole
            "fsdp_use_orig_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
            "fsdp_offload_params": False,
            "fsdp_activation_checkpointing": cfg.train.gradient_checkpointing,
        }
    else:
        doc["distributed_type"] = "DEEPSPEED"
        assert deepspeed_file is not None, "the DeepSpeed JSON is written first"
        doc["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file), "zero3_init_flag": False}
    return doc


def write_launch_config(cfg: PipelineConfig, num_processes: int, out_dir: Path, cuda: bool | None = None) -> Path:
    """Write ``accelerate.yaml`` (and ``deepspeed.json``) under ``out_dir``; return the YAML's path.

    ``distributed.config_file`` (the user's own accelerate config) wins: it is returned unchanged.
    """
    if cfg.distributed.config_file is not None:
        own = cfg.resolve(cfg.distributed.config_file)
        if not own.is_file():
            raise ConfigError(f"distributed.config_file: {own} does not exist; write one with "
                              f"`accelerate config --config_file {own}` or remove the field to let lorapipe write it")
        return own
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cfg.distributed.strategy != "ddp" and not cuda:
        raise ConfigError(f"distributed.strategy: `{cfg.distributed.strategy}` needs CUDA GPUs; on this machine "
                          "use `ddp` (gloo on the CPU)")
    out_dir.mkdir(parents=True, exist_ok=True)
    ds_file = None
    if cfg.distributed.strategy == "deepspeed":
        ds_file = out_dir / "deepspeed.json"
        atomic_write_json(ds_file, deepspeed_config(cfg))
    path = out_dir / "accelerate.yaml"
    doc = accelerate_config(cfg, num_processes, cuda, ds_file)
    header = (f"# written by lorapipe from the `distributed` section of {cfg.source or 'the config'};\n"
              "# copy it, edit it and point distributed.config_file at it to take over.\n")
    atomic_write(path, header + yaml.safe_dump(doc, sort_keys=True))
    return path


# ---------------------------------------------------------------------------------- the launcher
def strip_launch_options(argv: list[str]) -> list[str]:
    """``argv`` without ``--launcher X`` and ``--num-processes N`` (either spelling with ``=``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--launcher", "--num-processes"):
            skip = True
        elif not a.startswith(("--launcher=", "--num-processes=")):
            out.append(a)
    return out


def relaunch_argv(argv: list[str]) -> list[str]:
    """What follows ``accelerate launch`` to re-run this ``lorapipe ... train ...`` command line (``argv``
    without the program name) in every rank: ``-m lorapipe`` plus ``argv`` minus the launch options."""
    if "train" not in argv:
        raise ConfigError(f"cannot re-launch {shlex.join(argv)!r}: it is not a `lorapipe train` command line; "
                          "run `accelerate launch -m lorapipe train CONFIG` yourself")
    return ["-m", "lorapipe", *strip_launch_options(argv)]


def launch_argv(config_file: Path, num_processes: int, worker: list[str]) -> list[str]:
    """The ``accelerate launch`` command line running ``worker`` (e.g. ``["-m", "lorapipe", "train", ...]``)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "--num_processes", str(num_processes), *worker]


def launch(cfg: PipelineConfig, num_processes: int, worker: list[str], out_dir: Path | None = None,
           echo=print) -> int:
    """Start ``worker`` on ``num_processes`` ranks with accelerate; stream its output; return its exit code.

    ``worker`` is what follows ``accelerate launch`` (``["-m", "lorapipe", "train", CONFIG, ...]``). The
    batch layout is checked before anything starts, so a bad accumulation fails in a second, not after
    N model loads. Ctrl-C is passed on to the job, which the Trainer's checkpoints make resumable.
    """
    if num_processes < 1:
        raise ConfigError(f"--num-processes: must be at least 1, got {num_processes}")
    lay = layout(cfg, num_processes)
    config_file = write_launch_config(cfg, num_processes, out_dir or cfg.run_dir / "launch")
    argv = launch_argv(config_file, num_processes, worker)
    echo(lay.describe())
    echo("launching: " + shlex.join(argv))
    env = dict(os.environ, **{LAUNCHED_ENV: "1"})
    import torch

    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # gloo on the CPU, whatever the user's config says
        # Two ranks on few cores: one thread each, or they fight over the cores.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    proc = subprocess.Popen(argv, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached the ranks too; a signal sent to us alone is passed on.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


# ---------------------------------------------------------------------------------- saving
def gather_state_dict(trainer) -> dict[str, Any] | None:
    """The full state dict when the weights are sharded (FSDP, ZeRO-3), else None.

    A collective: every rank must call it. Rank 0 then passes the result to ``save_pretrained``; PEFT
    keeps only the adapter's tensors.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    if getattr(trainer, "is_deepspeed_enabled", False):
        engine = trainer.model_wrapped
        if engine.config.get("zero_optimization", {}).get("stage") == 3:
            return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
    return None


def unwrap(trainer):
    """The PEFT model inside whatever wrapper accelerate put around it."""
    return trainer.accelerator.unwrap_model(trainer.model)
