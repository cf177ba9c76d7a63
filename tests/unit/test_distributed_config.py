"""The `distributed` section turned into accelerate/DeepSpeed files, batch layouts and launch lines;
QLoRA's checks and bitsandbytes config. No processes are started here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lorapipe.config import load_config
from lorapipe.errors import ConfigError
from lorapipe.train import distributed, quant


def _cfg(tmp_path: Path, **over):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "pipeline.yaml").write_text(
        "task: {name: t, description: d, system_prompt: s}\n"
        "data: {train_file: train.jsonl}\n"
        "train: {per_device_train_batch_size: 2, gradient_accumulation_steps: 8}\n")
    return load_config(tmp_path / "pipeline.yaml", over)


# ------------------------------------------------------------------------------------ batch layout
@pytest.mark.parametrize("accum,procs,keep,want_accum,want_global", [
    (8, 1, True, 8, 16),
    (8, 2, True, 4, 16),
    (8, 8, True, 1, 16),
    (8, 2, False, 8, 32),   # keep_global_batch false: the global batch grows with the processes
    (6, 4, False, 6, 48),
])
def test_layout_keeps_the_global_batch(tmp_path, accum, procs, keep, want_accum, want_global):
    cfg = _cfg(tmp_path, **{"train.gradient_accumulation_steps": accum, "distributed.keep_global_batch": keep})
    world_cfg, lay = distributed.adapt_to_world(cfg, procs)
    assert (lay.accumulation, lay.global_batch) == (want_accum, want_global)
    assert world_cfg.train.gradient_accumulation_steps == want_accum
    assert cfg.train.gradient_accumulation_steps == accum  # the caller's config is untouched (its hash too)
    assert world_cfg.source == cfg.source


def test_layout_report_names_both_runs(tmp_path):
    lay = distributed.layout(_cfg(tmp_path), 2)
    assert lay.describe() == ("global batch 16 = 2 per device x 4 accumulation x 2 process(es) "
                              "(same as 2 x 8 = 16 in one process)")


@pytest.mark.parametrize("accum,procs,hint", [
    (3, 2, "set it to a multiple of 2 (e.g. 4), use a process count that divides it (3)"),
    (6, 4, "set it to a multiple of 4 (e.g. 8), use a process count that divides it (2, 3, 6)"),
    (1, 2, "set it to a multiple of 2 (e.g. 2), use a process count that divides it (only 1)"),
])
def test_layout_that_cannot_keep_the_batch_says_what_to_change(tmp_path, accum, procs, hint):
    cfg = _cfg(tmp_path, **{"train.gradient_accumulation_steps": accum})
    with pytest.raises(ConfigError) as e:
        distributed.adapt_to_world(cfg, procs)
    msg = str(e.value)
    assert f"train.gradient_accumulation_steps: {accum} is not divisible by {procs} processes" in msg
    assert hint in msg
    assert "distributed.keep_global_batch: false" in msg


# ------------------------------------------------------------------------------------ config files
@pytest.mark.parametrize("strategy,cuda,procs,dist_type,use_cpu", [
    ("ddp", False, 2, "MULTI_GPU", True),     # torchrun starts the ranks; gloo on the CPU
    ("ddp", True, 4, "MULTI_GPU", False),
    ("ddp", True, 1, "NO", False),
    ("fsdp", True, 2, "FSDP", False),
    ("deepspeed", True, 2, "DEEPSPEED", False),
])
def test_accelerate_yaml_per_strategy(tmp_path, strategy, cuda, procs, dist_type, use_cpu):
    cfg = _cfg(tmp_path, **{"distributed.strategy": strategy, "train.bf16": False})
    path = distributed.write_launch_config(cfg, procs, tmp_path / "launch", cuda=cuda)
    doc = yaml.safe_load(path.read_text())
    assert (doc["distributed_type"], doc["use_cpu"], doc["num_processes"]) == (dist_type, use_cpu, procs)
    assert doc["mixed_precision"] == "no" and doc["main_process_port"] == 0
    assert ("fsdp_config" in doc) == (strategy == "fsdp")
    assert (tmp_path / "launch" / "deepspeed.json").exists() == (strategy == "deepspeed")


@pytest.mark.parametrize("strategy,zero", [("ddp", 2), ("fsdp", 2), ("deepspeed", 2), ("deepspeed", 3)])
def test_accelerate_itself_accepts_the_written_config(tmp_path, strategy, zero):
    """accelerate's own launch-argument validation reads the file as a user's config would be read."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    cfg = _cfg(tmp_path, **{"distributed.strategy": strategy, "distributed.zero_stage": zero})
    path = distributed.write_launch_config(cfg, 2, tmp_path / "launch", cuda=True)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(path), "train.py"]))
    assert args.num_processes == 2
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (
        strategy == "ddp", strategy == "fsdp", strategy == "deepspeed")
    if strategy == "fsdp":
        assert args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP" and args.fsdp_use_orig_params is False
        assert args.fsdp_cpu_ram_efficient_loading and args.fsdp_sync_module_states
    if strategy == "deepspeed":
        ds = json.loads(Path(args.deepspeed_config_file).read_text())
        assert ds["zero_optimization"]["stage"] == zero
        # ZeRO-3 must gather the weights on save, or the adapter written at the end is empty
        assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) == (zero == 3)
        assert ds["gradient_accumulation_steps"] == "auto"  # the Trainer fills in the world-adjusted value


def test_users_own_config_file_wins(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    cfg = _cfg(tmp_path, **{"distributed.config_file": "mine.yaml", "distributed.strategy": "fsdp"})
    assert distributed.write_launch_config(cfg, 2, tmp_path / "launch", cuda=False) == own
    assert not (tmp_path / "launch").exists()


@pytest.mark.parametrize("over,message", [
    ({"distributed.config_file": "missing.yaml"},
     "missing.yaml does not exist; write one with `accelerate config --config_file"),
    ({"distributed.strategy": "fsdp"}, "distributed.strategy: `fsdp` needs CUDA GPUs; on this machine use `ddp`"),
    ({"distributed.strategy": "deepspeed"}, "distributed.strategy: `deepspeed` needs CUDA GPUs"),
])
def test_launch_config_errors(tmp_path, over, message):
    with pytest.raises(ConfigError, match="distributed") as e:
        distributed.write_launch_config(_cfg(tmp_path, **over), 2, tmp_path / "launch", cuda=False)
    assert message in str(e.value)


# ------------------------------------------------------------------------------------ command lines
@pytest.mark.parametrize("argv,want", [
    (["train", "p.yaml", "--launcher", "accelerate", "--num-processes", "2"], ["train", "p.yaml"]),
    (["-q", "train", "p.yaml", "--launcher=accelerate", "--num-processes=4", "--no-resume"],
     ["-q", "train", "p.yaml", "--no-resume"]),
    (["train", "p.yaml", "--set", "train.max_steps=3"], ["train", "p.yaml", "--set", "train.max_steps=3"]),
])
def test_relaunch_argv_drops_only_the_launch_options(argv, want):
    assert distributed.relaunch_argv(argv) == ["-m", "lorapipe", *want]


def test_relaunch_needs_a_train_command():
    with pytest.raises(ConfigError, match="not a `lorapipe train` command line"):
        distributed.relaunch_argv(["run", "p.yaml"])


def test_launch_argv_is_accelerate_launch(tmp_path):
    argv = distributed.launch_argv(tmp_path / "a.yaml", 2, ["-m", "lorapipe", "train", "p.yaml"])
    assert argv == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "a.yaml"),
                    "--num_processes", "2", "-m", "lorapipe", "train", "p.yaml"]


def test_launch_checks_the_batch_before_starting_anything(tmp_path):
    cfg = _cfg(tmp_path, **{"train.gradient_accumulation_steps": 3})
    with pytest.raises(ConfigError, match="not divisible by 2 processes"):
        distributed.launch(cfg, 2, ["-m", "lorapipe", "train", "p.yaml"], out_dir=tmp_path / "launch")
    assert not (tmp_path / "launch").exists()
    with pytest.raises(ConfigError, match="--num-processes: must be at least 1, got 0"):
        distributed.launch(cfg, 0, ["-m", "lorapipe"], out_dir=tmp_path / "launch")


def test_in_launched_process(monkeypatch):
    for var in ("LOCAL_RANK", distributed.LAUNCHED_ENV):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.in_launched_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # the user ran `accelerate launch -m lorapipe train` by hand
    assert distributed.in_launched_process()


# ------------------------------------------------------------------------------------ QLoRA
@pytest.mark.parametrize("over,cuda,bnb,message", [
    ({"lora.quantization": "4bit"}, False, True,
     "lora.quantization: `4bit` (QLoRA) needs a CUDA GPU with bitsandbytes; remove it to train the full-precision"),
    ({"lora.quantization": "8bit"}, True, False,
     "lora.quantization: `8bit` needs the bitsandbytes package: pip install 'lorapipe[qlora]'"),
    ({"lora.quantization": "8bit", "distributed.launcher": "accelerate", "distributed.strategy": "fsdp"}, True, True,
     "`8bit` does not work with distributed.strategy `fsdp`; use `4bit`"),
    ({"lora.quantization": "8bit", "lora.use_dora": True}, True, True, "lora.use_dora with lora.quantization `8bit`"),
])
def test_quantization_checks(tmp_path, monkeypatch, over, cuda, bnb, message):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if bnb else None) if name == "bitsandbytes" else real(name, *a))
    problems = quant.check_quantization(_cfg(tmp_path, **over), cuda=cuda)
    assert any(message in p for p in problems), problems


def test_no_quantization_no_problems(tmp_path):
    assert quant.check_quantization(_cfg(tmp_path), cuda=False) == []


@pytest.mark.parametrize("q,fields", [
    ("4bit", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}),
    ("8bit", {"load_in_8bit": True, "load_in_4bit": False}),
])
def test_bnb_config(q, fields):
    import torch

    c = quant.bnb_config(q, torch.bfloat16)
    for k, v in fields.items():
        assert getattr(c, k) == v
    if q == "4bit":
        assert c.bnb_4bit_compute_dtype == torch.bfloat16


def test_train_stage_refuses_qlora_without_cuda(tmp_path):
    """The train stage stops before loading anything, with the fix in the message."""
    import torch

    from lorapipe.train import trainer

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _cfg(tmp_path, **{"lora.quantization": "4bit"})
    with pytest.raises(ConfigError) as e:
        trainer.run(cfg, tmp_path / "train.jsonl", None, tmp_path / "out")
    assert "lora.quantization: `4bit` (QLoRA) needs a CUDA GPU" in str(e.value)
    assert "remove it to train the full-precision base" in str(e.value)
    assert not (tmp_path / "out").exists()



def test_cli_rejects_an_unknown_launcher(tmp_path):
    from typer.testing import CliRunner

    from lorapipe.cli import app

    _cfg(tmp_path)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "pipeline.yaml"), "--launcher", "slurm"])
    assert isinstance(result.exception, ConfigError)
    assert "--launcher: `slurm` is not a launcher; use `accelerate` or `none`" in str(result.exception)


@pytest.mark.parametrize("amx,auto,explicit_ok", [(True, True, True), (False, False, False)])
def test_bf16_on_cpu_follows_the_matrix_units(tmp_path, monkeypatch, amx, auto, explicit_ok):
    """Without CUDA, `bf16: auto` means bf16 autocast exactly where the CPU has AMX; `true` elsewhere is refused."""
    import torch

    from lorapipe.train import trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert distributed.bf16_supported() is auto
    cfg = _cfg(tmp_path)
    args = trainer.training_arguments(cfg, tmp_path, has_eval=False, n_train=8)
    assert args.bf16 is auto
    assert distributed._mixed_precision(cfg, cuda=False) == ("bf16" if auto else "no")
    cfg = _cfg(tmp_path, **{"train.bf16": True})
    if explicit_ok:
        trainer._check_hardware(cfg)
    else:
        with pytest.raises(ConfigError, match="AMX"):
            trainer._check_hardware(cfg)
