"""RegistryAdapterSource: what the server sees of a registry (resolve, snapshot, poll)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lorapipe.registry import Registry
from lorapipe.registry.core import blob_key
from lorapipe.registry.testing import make_adapter_dir, make_run_dir
from lorapipe.serve.adapters import AdapterNotFound, AdapterRejected, AdapterSource, verify_adapter_dir
from lorapipe.serve.registry_source import RegistryAdapterSource


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    r = Registry(tmp_path / "registry")
    r.push("c", make_run_dir(tmp_path / "a"))
    r.push("c", make_run_dir(tmp_path / "b", seed=1))
    return r


def test_resolve_materialises_a_verified_adapter(reg: Registry, tmp_path: Path) -> None:
    src = RegistryAdapterSource(reg.url, tmp_path / "cache")
    assert isinstance(src, AdapterSource)
    got = src.resolve("c")
    assert (got.name, got.version, got.token) == ("c", "c@v2", "c@v2")
    assert got.path == tmp_path / "cache" / "c" / "v2" / "adapter"
    assert got.meta["digest"] == reg.record("c@v2")["digest"] and got.meta["registry"] == reg.url
    verified = verify_adapter_dir(got.path)  # the server's own checks pass on the pulled copy
    assert verified.base_identity["spec"] == "tiny-llama"
    assert sorted(p.name for p in got.path.parent.iterdir()) == ["adapter", "version.json"]  # adapter only
    assert src.resolve("c@v1").path == tmp_path / "cache" / "c" / "v1" / "adapter"


def test_snapshot_and_poll_follow_alias_moves(reg: Registry, tmp_path: Path) -> None:
    src = RegistryAdapterSource(reg, tmp_path / "cache")
    assert src.snapshot() == {"c": "c@v2", "c@latest": "c@v2"}
    assert src.poll() == {"c": "c@v2", "c@latest": "c@v2"}  # first poll reports everything
    assert src.poll() == {}
    reg.promote("c@v1", "prod")
    assert src.poll() == {"c": "c@v1", "c@prod": "c@v1"}
    assert src.resolve("c@prod").version == "c@v1"
    reg.promote("c@v2", "prod")
    assert src.poll() == {"c": "c@v2", "c@prod": "c@v2"}
    reg.rollback("c", "prod")
    assert src.poll() == {"c": "c@v1", "c@prod": "c@v1"}
    reg.push("c", make_adapter_dir(tmp_path / "new", seed=9))
    assert src.poll() == {"c@latest": "c@v3"}  # `c` stays on prod
    reg.push("d", make_adapter_dir(tmp_path / "d"))
    assert src.poll() == {"d": "d@v1", "d@latest": "d@v1"}


def test_names_filter_and_versions(reg: Registry, tmp_path: Path) -> None:
    reg.push("other", make_adapter_dir(tmp_path / "o"))
    src = RegistryAdapterSource(reg, tmp_path / "cache", names=["c"], include_versions=True)
    assert src.snapshot() == {"c": "c@v2", "c@latest": "c@v2", "c@v1": "c@v1", "c@v2": "c@v2"}
    with pytest.raises(AdapterNotFound, match=r"adapter `other` not found: this server serves c from"):
        src.resolve("other")


@pytest.mark.parametrize("name, message", [
    ("nope", r"adapter `nope` not found: `nope`: no adapter named `nope` in .*; known: c"),
    ("c@v7", r"adapter `c@v7` not found: `c@v7`: c has no version v7; it has v1, v2"),
    ("c@prod", r"adapter `c@prod` not found: `c@prod`: c has no alias `prod`; it has no aliases yet"),
])
def test_unknown_names(reg: Registry, tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(AdapterNotFound, match=message):
        RegistryAdapterSource(reg, tmp_path / "cache").resolve(name)


def test_corrupt_blob_is_rejected(reg: Registry, tmp_path: Path) -> None:
    blob = Path(reg.url) / blob_key(reg.record("c@v1")["files"]["adapter/adapter_model.safetensors"])
    blob.chmod(0o644)
    blob.write_bytes(b"evil")
    with pytest.raises(AdapterRejected, match=r"adapter `c@v1` \(c@v1\): c@v1: adapter/adapter_model.safetensors "
                                              r"is corrupt"):
        RegistryAdapterSource(reg, tmp_path / "cache").resolve("c@v1")
    assert not (tmp_path / "cache" / "c" / "v1").exists()


def test_parallel_resolves_share_one_copy(reg: Registry, tmp_path: Path) -> None:
    src = RegistryAdapterSource(reg, tmp_path / "cache")
    results, errors = [], []

    def go() -> None:
        try:
            results.append(src.resolve("c@v1").path)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(results)) == 1
    verify_adapter_dir(results[0])


def test_pulled_adapter_loads_with_peft(tmp_path: Path) -> None:
    """A real PEFT adapter on the tiny model survives push -> registry -> source -> PeftModel."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorapipe.manifest import Manifest
    from lorapipe.testing import build_tiny_model

    base = build_tiny_model(tmp_path / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "ad"
    model.save_pretrained(adapter)
    Manifest(stage="train", config_hash="x", extra={"base_model": {"spec": str(base), "kind": "local",
                                                                   "weights_sha256": None}}).save(adapter)
    reg = Registry(tmp_path / "registry")
    reg.push("tiny", make_run_dir(tmp_path / "run", adapter_from=adapter))
    got = RegistryAdapterSource(reg, tmp_path / "cache").resolve("tiny")
    verify_adapter_dir(got.path)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), got.path)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)
