"""`lorapipe export`: merged model with a parity check, adapter-only round trip, pickle refusal."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lorapipe import export as ex
from lorapipe.errors import ModelError
from lorapipe.manifest import MANIFEST, Manifest
from lorapipe.serve.adapters import verify_adapter_dir
from lorapipe.testing import build_tiny_adapter, build_tiny_model

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("export") / "base")


@pytest.fixture
def adapter(base, tmp_path):
    return build_tiny_adapter(base, tmp_path / "adapter", seed=3)


def adapter_logits(base, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir).eval()
    with torch.inference_mode():
        return model(input_ids=IDS).logits


def test_merge_writes_a_standard_model_with_parity(base, adapter, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    m = ex.run(adapter, out, mode="merge")
    assert m.metrics["parity_max_abs_diff"] <= 1e-4 and m.metrics["parity_inputs"] == 3
    assert m.extra["base_model"]["weights_sha256"] == json.loads((adapter / MANIFEST).read_text())[
        "extra"]["base_model"]["weights_sha256"]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()
    assert Manifest.load(out).outputs_intact(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    with torch.inference_mode():
        assert torch.allclose(merged(input_ids=IDS).logits, adapter_logits(base, adapter), atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).chat_template


def test_merge_refuses_when_parity_fails(base, adapter, tmp_path, monkeypatch):
    from peft.tuners.lora import LoraModel

    # a merge that silently drops the adapter must be caught by the logit comparison
    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, **kw: self.unload())
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "merged", mode="merge")
    assert "merge parity failed" in str(err.value) and "nothing was written" in str(err.value)
    assert not (tmp_path / "merged").exists()


def test_adapter_only_round_trip(base, adapter, tmp_path):
    out = tmp_path / "exported"
    m = ex.run(adapter, out, mode="adapter")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json",
                                                     "adapter_model.safetensors", MANIFEST]
    assert m.extra["vllm_compatible"] is True and m.extra["base_model"]["spec"] == str(base)
    verify_adapter_dir(out)  # its manifest hashes every file: the server accepts it
    assert torch.equal(adapter_logits(base, out), adapter_logits(base, adapter))
    keys = list(load_file(out / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.") and (".lora_A." in k or ".lora_B." in k) for k in keys)


def make_pickled(adapter):
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    Manifest(stage="train", config_hash="x").save(adapter)


@pytest.mark.parametrize("mode", ["merge", "adapter"])
def test_pickle_weights_are_refused(adapter, tmp_path, mode):
    make_pickled(adapter)
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode=mode)
    assert "adapter_model.bin: pickle weights can run code when loaded" in str(err.value)
    assert "--allow-pickle" in str(err.value)


def test_allowed_pickle_is_exported_as_safetensors(base, adapter, tmp_path):
    reference = adapter_logits(base, adapter)
    make_pickled(adapter)
    out = tmp_path / "out"
    ex.run(adapter, out, mode="adapter", allow_pickle=True, base=str(base))
    assert not list(out.glob("*.bin")) and torch.equal(adapter_logits(base, out), reference)


@pytest.mark.parametrize("config_patch, problem", [
    ({"use_dora": True}, "DoRA"), ({"bias": "all"}, "bias='all'"),
    ({"modules_to_save": ["score"]}, "modules_to_save ['score']"),
])
def test_vllm_problems_are_reported(config_patch, problem):
    assert any(problem in p for p in ex.vllm_problems({"peft_type": "LORA", **config_patch}))


def test_missing_base_is_an_actionable_error(adapter, tmp_path):
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    (adapter / MANIFEST).unlink()
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode="merge")
    assert "names the base model; pass --base SPEC" in str(err.value)


def test_wrong_base_is_refused(adapter, tmp_path):
    other = build_tiny_model(tmp_path / "other-base", seed=1)
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode="merge", base=str(other))
    assert "trained on base weights" in str(err.value) and "pass the right --base" in str(err.value)


def test_cli_export(adapter, tmp_path):
    from lorapipe.cli import app

    out = tmp_path / "cli-out"
    r = CliRunner().invoke(app, ["--json", "export", "--adapter", str(adapter), "--out", str(out), "--adapter-only"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == "adapter" and (out / "adapter_model.safetensors").is_file()
    r = CliRunner().invoke(app, ["export", "--adapter", str(adapter), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0 and "parity: max |logit difference|" in r.stdout
