"""`lorapipe rebuild NAME@vN`: the recorded pipeline re-run from the registry reproduces data and weights."""

from __future__ import annotations

import json

import torch
from test_pipeline_tiny import cli, project  # noqa: F401  (fixture)

from lorapipe.rebuild import compare_weights


def test_rebuild_reproduces_data_weights_and_metrics_without_asking_the_teacher(project, tmp_path):  # noqa: F811
    registry = tmp_path / "registry"
    r = cli("--json", "run", "pipeline.yaml", "--push", "tiny", "--registry", str(registry), cwd=project)
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads(r.stdout)["registered"].startswith("tiny@v1")
    # The recipe's module may change (or vanish) afterwards: the rebuild uses the recorded one and the
    # recorded answers, so the teacher is never called again.
    (project / "teacher.py").write_text("raise SystemExit('the rebuild must not import this file')\n")
    out = tmp_path / "rebuilt"
    r = cli("--json", "rebuild", "tiny@v1", "--registry", str(registry), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["data_identical"] and rep["weights_ok"] and rep["metrics_ok"], rep
    assert {"generate/generated.jsonl", "score/scored.jsonl", "augment/augmented.jsonl", "split/train.jsonl",
            "split/eval.jsonl"} <= set(rep["data"])
    assert rep["weights"]["max_abs_diff"] <= 1e-4 and rep["weights"]["tensors"] > 0
    assert "train.eval_loss" in rep["metrics"]
    assert rep["new_calls"] == {}, rep["new_calls"]
    assert (out / "rebuild.json").is_file() and (out / "run" / "train" / "adapter" / "adapter_config.json").is_file()
    # rebuilding into the same directory again is refused, not mixed
    r = cli("rebuild", "tiny@v1", "--registry", str(registry), "--out", str(out), cwd=tmp_path)
    assert r.returncode != 0 and "already exists" in " ".join((r.stdout + r.stderr).split())


def test_compare_weights_reports_the_worst_tensor(tmp_path):
    from safetensors.torch import save_file

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    t = {"x.lora_A.weight": torch.zeros(2, 3), "y.lora_B.weight": torch.ones(3, 2)}
    save_file(t, str(a / "adapter_model.safetensors"))
    save_file({**t, "y.lora_B.weight": torch.ones(3, 2) + 1e-3}, str(b / "adapter_model.safetensors"))
    loose = compare_weights(a, b, atol=1e-2)
    assert loose["ok"] and not loose["identical"] and loose["worst_tensor"] == "y.lora_B.weight"
    assert abs(loose["max_abs_diff"] - 1e-3) < 1e-6
    assert not compare_weights(a, b, atol=1e-5)["ok"]
    save_file({"z": torch.zeros(1)}, str(b / "adapter_model.safetensors"))
    assert "names differ" in compare_weights(a, b, atol=1)["problem"]
