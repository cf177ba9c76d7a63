"""`lorapipe train` through the real CLI on a tiny random Llama: exact files, plain-PEFT loading."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _rows(n: int, start: int = 0) -> str:
    out = []
    for i in range(start, start + n):
        name = ["Ann Lee", "Bob Ray", "Zoé Kim"][i % 3]
        out.append(json.dumps({"messages": [
            {"role": "user", "content": f"Hi, I am {name}, ticket {i}"},
            {"role": "assistant", "content": json.dumps({"name": name})}]}))
    return "\n".join(out) + "\n"


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    (tmp_path / "train.jsonl").write_text(_rows(24))
    (tmp_path / "eval.jsonl").write_text(_rows(6, 100))
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        # lorapipe train pipeline.yaml
        task: {{name: tiny, description: Extract the name., system_prompt: Extract the name as JSON.}}
        base_model: {tiny_model_dir}
        data: {{train_file: train.jsonl, eval_file: eval.jsonl}}
        lora: {{r: 4, lora_alpha: 8}}
        train: {{max_steps: 4, eval_steps: 2, save_steps: 2, logging_steps: 1,
                 per_device_train_batch_size: 4, gradient_accumulation_steps: 1, learning_rate: 0.01}}
        """))
    return tmp_path


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lorapipe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_train_writes_a_plain_peft_adapter(project, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = cli("--json", "train", "pipeline.yaml", "--train-file", "train.jsonl", "--eval-file", "eval.jsonl",
            cwd=project)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    adapter = project / "runs" / "tiny" / "train" / "adapter"
    assert out["adapter"] == str(adapter)
    assert sorted(p.name for p in adapter.iterdir()) == ["README.md", "adapter_config.json",
                                                          "adapter_model.safetensors", "manifest.json"]
    train_dir = adapter.parent
    assert {"adapter", "checkpoints", "manifest.json", "trainer_log.json"} <= {p.name for p in train_dir.iterdir()}
    assert sorted(p.name for p in (train_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4",
                                                                           "lorapipe_key.json"]

    manifest = json.loads((adapter / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"train.jsonl", "eval.jsonl"}
    assert manifest["extra"]["base_model"]["weights_sha256"]
    assert manifest["config"]["lora"]["r"] == 4 and manifest["versions"]["peft"]
    assert {"train_loss", "eval_loss", "eval_perplexity"} <= set(manifest["metrics"])
    assert set(manifest["outputs"]) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    log = json.loads((train_dir / "trainer_log.json").read_text())
    assert any("loss" in e for e in log) and any("eval_loss" in e for e in log)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(ids).logits
    assert not torch.allclose(before, after), "the adapter must change the logits"

    # The recorded eval loss (read from the Trainer's own evaluations, not recomputed) is the saved
    # adapter's: the best of the logged ones, and what a fresh PEFT load of the adapter scores.
    from transformers import AutoTokenizer

    from lorapipe.data.formats import read_jsonl
    from lorapipe.evaluate.metrics import eval_loss

    logged = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert manifest["metrics"]["eval_loss"] == min(logged)
    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    rescored = eval_loss(fresh, AutoTokenizer.from_pretrained(tiny_model_dir), read_jsonl(project / "eval.jsonl"))
    assert manifest["metrics"]["eval_loss"] == pytest.approx(rescored["loss"], rel=1e-4)


def test_train_resumes_from_the_newest_checkpoint(project):
    assert cli("train", "pipeline.yaml", cwd=project).returncode == 0
    r = cli("train", "pipeline.yaml", "--set", "train.max_steps=6", cwd=project)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr and "checkpoint-4" in r.stderr
    manifest = json.loads((project / "runs/tiny/train/manifest.json").read_text())
    assert manifest["metrics"]["global_steps"] == 6


@pytest.mark.parametrize("extra, expected", [
    ("lora: {target_modules: [q_prj]}\n", "`q_prj` is not a Linear module of this model; did you mean `q_proj`?"),
    ("lora: {lora_alhpa: 3}\n", "lora.lora_alhpa: unknown field; did you mean `lora_alpha`?"),
])
def test_bad_config_exits_2_without_traceback(project, extra, expected):
    cfg = project / "pipeline.yaml"
    cfg.write_text(cfg.read_text().replace("lora: {r: 4, lora_alpha: 8}\n", extra))
    r = cli("train", "pipeline.yaml", cwd=project)
    assert r.returncode == 2
    assert expected in r.stderr and "Traceback" not in r.stderr


def test_bad_data_line_is_named(project):
    (project / "train.jsonl").write_text('{"prompt": "p"}\n')
    r = cli("train", "pipeline.yaml", cwd=project)
    assert r.returncode == 2
    assert "train.jsonl:1: unknown row format (keys: prompt)" in r.stderr


def test_resumed_training_equals_the_uninterrupted_one(project, tmp_path_factory):
    """Killed in the middle of epoch 2 and resumed, training ends with the same weights as a run that was
    never interrupted (issue 19): the data order of every epoch comes from the seed, not from the RNG
    state the epoch happened to start with."""
    import shutil

    from safetensors.torch import load_file

    steps = ["--set", "train.max_steps=10", "--set", "train.save_total_limit=10"]  # 6 steps an epoch
    r = cli("train", "pipeline.yaml", *steps, cwd=project)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = tmp_path_factory.mktemp("resumed") / "project"
    shutil.copytree(project, resumed)
    train = resumed / "runs" / "tiny" / "train"
    shutil.rmtree(train / "adapter")
    shutil.rmtree(train / "checkpoints" / "checkpoint-10")  # as if killed after step 8 (epoch 2, its 2nd step)
    r = cli("train", "pipeline.yaml", *steps, cwd=resumed)
    assert r.returncode == 0 and "checkpoint-8" in r.stderr, r.stderr[-3000:]
    a = load_file(project / "runs/tiny/train/adapter/adapter_model.safetensors")
    b = load_file(train / "adapter" / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
