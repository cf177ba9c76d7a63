"""Two training processes on the CPU (accelerate -> torchrun -> gloo) give the one-process adapter.

Why the weights can match: every optimizer step sees all 4 training rows (1 row per device x
accumulation 4 in one process; 1 x 2 x 2 processes), so the data order and how accelerate shards it
cannot change the step's gradient; dropout is 0 and the seed is fixed. What is left is float
summation order, hence the tolerance ATOL (observed differences are ~1e-7).

Each test starts real processes (about half a minute each on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorapipe.config import load_config
from lorapipe.testing import build_tiny_model
from lorapipe.train import distributed, trainer

pytestmark = pytest.mark.timeout(900)

ATOL = 1e-5  # on adapter weights; lora_B entries reach ~1e-2 after the 4 steps, so this is tight
MAX_STEPS = 4
ROWS = [("Hi, I'm Ann Lee", '{"name": "Ann Lee"}'),
        ("reach me at ann.lee@example.com", '{"email": "ann.lee@example.com"}'),
        ("tél. +33 6 12 34 56 78", '{"phone": "+33 6 12 34 56 78"}'),
        ("the quick brown fox", '{"name": null}')]
WORKER = Path(__file__).with_name("distributed_kill_worker.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    build_tiny_model(root / "base")
    rows = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]} for u, a in ROWS]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pipeline.yaml").write_text(f"""
task: {{name: dist, description: extract contacts, system_prompt: Extract the contact as JSON.}}
base_model: {root / 'base'}
data: {{train_file: train.jsonl}}
lora: {{r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: [q_proj, v_proj]}}
train: {{max_steps: {MAX_STEPS}, per_device_train_batch_size: 1, gradient_accumulation_steps: 4,
        learning_rate: 0.01, warmup_ratio: 0.0, lr_scheduler_type: constant, save_steps: 1, save_total_limit: 2,
        logging_steps: 1, group_by_length: false, load_best_model_at_end: false, bf16: false, seed: 3}}
""")
    return root


@pytest.fixture(scope="module")
def reference(world: Path) -> Path:
    """The single-process run: accumulation 4, in this process."""
    cfg = load_config(world / "pipeline.yaml")
    trainer.run(cfg, world / "train.jsonl", None, world / "one", resume=False)
    return world / "one"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", distributed.LAUNCHED_ENV)}
    env["LORAPIPE_CACHE"] = os.environ.get("LORAPIPE_CACHE", str(Path.home() / ".cache" / "lorapipe"))
    return env


def _cli(world: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorapipe", *args], check=False, cwd=world, env=_env(),
                          capture_output=True, text=True, timeout=600)


def _assert_same_adapter(got: Path, want: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(got / "adapter_model.safetensors"), load_file(want / "adapter_model.safetensors")
    assert sorted(a) == sorted(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float(b[k].abs().max()) for k in b if "lora_B" in k)  # B starts at 0: training moved it
    assert moved > 100 * ATOL, moved
    assert diff <= ATOL, f"adapter weights differ by up to {diff:.3g} (tolerance {ATOL})"


def _assert_same_log(got: Path, want: Path) -> None:
    def steps(d: Path) -> list[tuple[int, float, float]]:
        log = json.loads((d / "trainer_log.json").read_text())
        return [(e["step"], e["loss"], e["grad_norm"]) for e in log if "loss" in e]

    a, b = steps(got), steps(want)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, MAX_STEPS + 1))
    for (_, la, ga), (_, lb, gb) in zip(a, b, strict=True):
        assert la == pytest.approx(lb, rel=1e-4) and ga == pytest.approx(gb, rel=1e-4)


def test_two_processes_train_the_single_process_adapter(world: Path, reference: Path):
    r = _cli(world, "train", "pipeline.yaml", "--train-file", "train.jsonl", "--out", "two", "--no-resume",
             "--launcher", "accelerate", "--num-processes", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "global batch 4 = 1 per device x 2 accumulation x 2 process(es) (same as 1 x 4 = 4" in r.stderr
    assert ("--num_processes 2 -m lorapipe train pipeline.yaml --train-file train.jsonl --out two --no-resume"
            in r.stderr)
    assert r.stdout.count("adapter: ") == 1, r.stdout  # only rank 0 reports
    out = world / "two"
    # one adapter, no leftovers of a second writer (atomic_dir temporaries are dot-folders)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "manifest.json", "trainer_log.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["extra"]["processes"], manifest["extra"]["global_batch"]) == (2, 4)
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    assert (ref_manifest["extra"]["processes"], ref_manifest["extra"]["global_batch"]) == (1, 4)
    assert manifest["config_hash"] == ref_manifest["config_hash"]  # 1 or 2 processes: the same stage
    _assert_same_adapter(out / "adapter", reference / "adapter")
    _assert_same_log(out, reference)


def test_resume_after_kill_9_of_one_rank(world: Path, reference: Path, monkeypatch, capfd):
    out = world / "killed"
    cfg = load_config(world / "pipeline.yaml")
    for k, v in {"KILL_AT_STEP": "2", "KILL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(world)
    rc = distributed.launch(cfg, 2, [str(WORKER), "train", "pipeline.yaml", "--train-file", "train.jsonl",
                                     "--out", str(out),
                                            "--no-resume"],
                            out_dir=world / "launch-kill")
    err = capfd.readouterr().err
    assert rc != 0
    assert "Signal 9 (SIGKILL)" in err, err[-3000:]  # torchrun saw rank 1 die, and stopped rank 0
    assert not (out / "adapter").exists()
    assert trainer.newest_checkpoint(out / "checkpoints").name == "checkpoint-2"

    monkeypatch.delenv("KILL_AT_STEP")
    r = _cli(world, "train", "pipeline.yaml", "--train-file", "train.jsonl", "--out", "killed", "--resume",
             "--launcher", "accelerate", "--num-processes", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming from" in r.stderr and "checkpoint-2" in r.stderr
    assert trainer.newest_checkpoint(out / "checkpoints").name == f"checkpoint-{MAX_STEPS}"
    _assert_same_adapter(out / "adapter", reference / "adapter")
    _assert_same_log(out, reference)
