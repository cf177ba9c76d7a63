"""`lorapipe export`: merged model with a parity check, adapter-only round trip, pickle refusal."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lorapipe import export as ex
from lorapipe.adapter_files import verify_adapter_dir, vllm_problems
from lorapipe.errors import ConfigError, ModelError
from lorapipe.manifest import MANIFEST, Manifest
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
    assert any(problem in p for p in vllm_problems({"peft_type": "LORA", **config_patch}))


def test_missing_base_is_an_actionable_error(adapter, tmp_path):
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    (adapter / MANIFEST).unlink()
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode="merge")
    assert "no manifest.json, so its files cannot be verified" in str(err.value)
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode="merge", allow_unverified=True)
    assert "names the base model; pass --base SPEC" in str(err.value)


def test_wrong_base_is_refused(adapter, tmp_path):
    other = build_tiny_model(tmp_path / "other-base", seed=1)
    with pytest.raises(ModelError) as err:
        ex.run(adapter, tmp_path / "out", mode="merge", base=str(other))
    assert f"trained on base `{json.loads((adapter / MANIFEST).read_text())['extra']['base_model']['spec']}`" \
        in str(err.value) and f"the base model here is `{other}`" in str(err.value)


def test_cli_export(adapter, tmp_path):
    from lorapipe.cli import app

    out = tmp_path / "cli-out"
    r = CliRunner().invoke(app, ["--json", "export", "--adapter", str(adapter), "--out", str(out), "--adapter-only"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == "adapter" and (out / "adapter_model.safetensors").is_file()
    r = CliRunner().invoke(app, ["export", "--adapter", str(adapter), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0 and "parity: max |logit difference|" in r.stdout


# --out never destroys what export did not write (issue 19, item 1) ------------------------------------
def _tree(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))


@pytest.mark.parametrize("where, message", [
    ("run", "holds the adapter directory"),  # --out runs/x while the adapter is runs/x/train/adapter
    ("adapter", "is the adapter directory"),
    ("inside", "lies inside the adapter directory"),
    ("cwd", "is the current directory or holds it"),
    ("dot", "is the current directory or holds it"),
    ("cwd-parent", "is the current directory or holds it"),
])
def test_out_never_replaces_the_source_or_the_current_directory(base, tmp_path, monkeypatch, where, message):
    run = tmp_path / "runs" / "x"
    adapter = build_tiny_adapter(base, run / "train" / "adapter", seed=3)
    (run / "split").mkdir()
    (run / "split" / "train.jsonl").write_text("{}\n")
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "todo.md").write_text("keep me")
    monkeypatch.chdir(work / "notes")
    out = {"run": run, "adapter": adapter, "inside": adapter / "export", "cwd": work / "notes", "dot": ".",
           "cwd-parent": work}[where]
    before = _tree(tmp_path)
    for force in (False, True):  # not even with --force
        with pytest.raises(ConfigError, match=message):
            ex.run(adapter, out, mode="adapter", force=force)
    assert _tree(tmp_path) == before


def test_out_refuses_a_foreign_folder_unless_forced(adapter, tmp_path):
    notes = tmp_path / "some_dir_with_notes"
    notes.mkdir()
    (notes / "notes.md").write_text("my notes")
    with pytest.raises(ConfigError, match=r"already exists and is a folder of 1 file\(s\) \(notes.md\), not an "
                                          r"earlier adapter export; .* pass --force to replace it"):
        ex.run(adapter, notes, mode="adapter")
    assert (notes / "notes.md").read_text() == "my notes"
    ex.run(adapter, notes, mode="adapter", force=True)
    assert not (notes / "notes.md").exists() and (notes / "adapter_model.safetensors").is_file()


def test_out_replaces_an_earlier_export_of_the_same_kind_only(base, adapter, tmp_path):
    out = tmp_path / "exported"
    ex.run(adapter, out, mode="adapter")
    ex.run(adapter, out, mode="adapter")  # the same kind again: replaced without --force
    with pytest.raises(ConfigError, match="not an earlier merge export"):
        ex.run(adapter, out, mode="merge")  # another kind is another thing
    (out / "NOTES.md").write_text("added by hand")
    with pytest.raises(ConfigError, match=r"\(NOTES.md, README.md, adapter_config.json, "):
        ex.run(adapter, out, mode="adapter")  # a file its manifest does not list: not only an export now
    assert (out / "NOTES.md").is_file()


def test_out_is_written_with_the_umask_permissions(adapter, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        ex.run(adapter, tmp_path / "exported", mode="adapter")
    finally:
        os.umask(old)
    out = tmp_path / "exported"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's owner-only 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}

