"""The embedded SmolLM2-135M-Instruct: resolve (GGUF → cached safetensors), one LoRA step, save, load."""

from __future__ import annotations

import json
import textwrap

import pytest

pytestmark = pytest.mark.slow


def test_embedded_model_trains_one_step_and_saves(tmp_path):
    import torch
    from peft import PeftModel

    from lorapipe import models
    from lorapipe.config import load_config
    from lorapipe.train import trainer

    info = models.resolve("smollm2-135m-instruct")
    assert info.kind == "embedded" and (info.path / "model.safetensors").is_file()
    assert len(info.weights_sha256) == 64
    rows = [{"messages": [{"role": "user", "content": f"Hi, I'm Ann Lee {i}, ann{i}@x.org"},
                          {"role": "assistant", "content": json.dumps({"name": f"Ann Lee {i}"})}]} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent("""\
        task: {name: smoke, description: d, system_prompt: Extract the name as JSON.}
        data: {train_file: train.jsonl}
        train: {max_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 2}
        """))
    cfg = load_config(tmp_path / "pipeline.yaml")
    m = trainer.run(cfg, tmp_path / "train.jsonl", None, tmp_path / "out")
    assert m.metrics["global_steps"] == 1 and m.metrics["train_loss"] > 0
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert m.extra["base_model"]["weights_sha256"] == info.weights_sha256

    base = models.load_model(info)
    tuned = PeftModel.from_pretrained(base, adapter)
    assert sorted(tuned.peft_config["default"].target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    ids = torch.tensor([[1, 9690, 198, 2]])
    with torch.no_grad():
        assert torch.isfinite(tuned(ids).logits).all()
