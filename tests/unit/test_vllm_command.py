"""The vLLM command line `lorapipe serve --engine vllm` runs (and `--dry-run` prints). No vLLM needed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from lorapipe.adapter_files import lora_rank
from lorapipe.errors import ServeError
from lorapipe.models import ModelInfo
from lorapipe.serve import vllm
from lorapipe.testing import build_tiny_adapter, build_tiny_model


@pytest.mark.parametrize("r,want", [(1, 8), (4, 8), (8, 8), (9, 16), (16, 16), (17, 32), (64, 64), (100, 128),
                                    (300, 320), (512, 512)])
def test_rank_rounds_up_to_a_size_vllm_accepts(r, want):
    assert vllm.round_rank(r) == want


def test_rank_beyond_vllm_is_an_error():
    with pytest.raises(ServeError, match="LoRA rank 513 is larger than vLLM's largest --max-lora-rank .512."):
        vllm.round_rank(513)


@pytest.mark.parametrize("config,want", [
    ({"r": 16}, 16),
    ({"r": 8, "rank_pattern": {"q_proj": 32, "v_proj": 4}}, 32),
    ({}, 8),
])
def test_lora_rank_reads_r_and_rank_pattern(config, want):
    assert lora_rank(config) == want


PLAN = {"base_dir": Path("/models/base dir"), "base_name": "smollm2-135m-instruct", "max_lora_rank": 16,
        "max_loras": 4, "port": 8001}


@pytest.mark.parametrize("adapters,extra,want_tail", [
    ({}, [], []),
    ({"contact": Path("/a/contact")}, [], ["--lora-modules", "contact=/a/contact"]),
    ({"b": Path("/a/b"), "a": Path("/a/a")}, ["--dtype", "bfloat16"],
     ["--lora-modules", "a=/a/a", "b=/a/b", "--dtype", "bfloat16"]),
])
def test_vllm_command(adapters, extra, want_tail):
    cmd = vllm.vllm_command(vllm.VllmPlan(adapters=adapters, extra_args=extra, **PLAN))
    assert cmd == ["vllm", "serve", "/models/base dir", "--served-model-name", "smollm2-135m-instruct",
                   "--host", "127.0.0.1", "--port", "8001", "--enable-lora", "--max-lora-rank", "16",
                   "--max-loras", "4", *want_tail]


def test_shell_line_is_pasteable():
    p = vllm.VllmPlan(adapters={"my adapter": Path("/a/it's here")}, **PLAN)
    line = vllm.shell_line(p)
    assert line.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve '/models/base dir' ")
    assert shlex.split(line) == ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", *vllm.vllm_command(p)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vllm")
    base = build_tiny_model(root / "base")
    adapters = root / "adapters"
    build_tiny_adapter(base, adapters / "small", r=4, seed=1)
    build_tiny_adapter(base, adapters / "big", r=24, seed=2)
    return base, adapters


def test_plan_takes_every_adapter_and_the_largest_rank(tiny):
    base, adapters = tiny
    p = vllm.plan(base=str(base), adapters=adapters, max_loras=8, port=9001, warn=pytest.fail)
    assert p.base_dir == base.resolve() and p.base_name == "base"
    assert p.adapters == {"big": (adapters / "big").resolve(), "small": (adapters / "small").resolve()}
    assert (p.max_lora_rank, p.max_loras, p.port) == (32, 8, 9001)  # r=24 rounds up to 32
    assert set(p.versions) == {"big", "small"}


def test_plan_without_adapters_uses_the_rank_floor(tiny, tmp_path):
    base, _ = tiny
    (tmp_path / "empty").mkdir()
    plan = vllm.plan(base=str(base), adapters=tmp_path / "empty", max_loras=2, port=1, rank_floor=48)
    assert plan.max_lora_rank == 64
    assert vllm.plan(base=str(base), adapters=None, max_loras=2, port=1).max_lora_rank == 16


@pytest.mark.parametrize("edit,why", [
    (lambda c: c.update(use_dora=True), "DoRA (use_dora) is not supported by vLLM"),
    (lambda c: c.update(bias="all"), "bias='all': vLLM loads LoRA weights only"),
])
def test_plan_skips_adapters_vllm_cannot_load(tiny, tmp_path, edit, why):
    import shutil

    from lorapipe.manifest import Manifest

    base, adapters = tiny
    shutil.copytree(adapters, tmp_path / "adapters")
    bad = tmp_path / "adapters" / "small"
    config = json.loads((bad / "adapter_config.json").read_text())
    edit(config)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    Manifest(stage="train", config_hash="x").save(bad)  # re-hash, so only the vLLM check can refuse it
    warnings: list[str] = []
    p = vllm.plan(base=str(base), adapters=tmp_path / "adapters", max_loras=2, port=1, warn=warnings.append)
    assert list(p.adapters) == ["big"] and why in p.skipped["small"]
    assert warnings == [f"warning: adapter `small` is not served by vLLM: {p.skipped['small']}"]


def test_plan_skips_adapters_that_fail_their_hash_check(tiny, tmp_path):
    import shutil

    base, adapters = tiny
    shutil.copytree(adapters, tmp_path / "adapters")
    (tmp_path / "adapters" / "big" / "adapter_model.safetensors").write_bytes(b"tampered")
    p = vllm.plan(base=str(base), adapters=tmp_path / "adapters", max_loras=2, port=1, warn=lambda m: None)
    assert list(p.adapters) == ["small"] and "sha256 mismatch" in p.skipped["big"]


def test_embedded_alias_becomes_its_local_directory(tiny, monkeypatch):
    """vLLM gets a local HF directory, never a name it would try to download."""
    import lorapipe.models

    base, _ = tiny
    seen = []

    def fake_resolve(spec: str) -> ModelInfo:
        seen.append(spec)
        return ModelInfo(spec, base.resolve(), "embedded", "0" * 64)

    monkeypatch.setattr(lorapipe.models, "resolve", fake_resolve)
    p = vllm.plan(base="smollm2-135m-instruct", adapters=None, max_loras=8, port=8001)
    assert seen == ["smollm2-135m-instruct"]
    cmd = vllm.vllm_command(p)
    assert cmd[2] == str(base.resolve()) and cmd[3:5] == ["--served-model-name", "smollm2-135m-instruct"]


def test_dry_run_prints_the_command_and_starts_nothing(tiny, monkeypatch):
    base, adapters = tiny
    monkeypatch.setattr(vllm.subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    out: list[str] = []
    vllm.run(base=str(base), adapters=adapters, port=8000, max_adapters=3, dry_run=True, echo=out.append,
             extra_args=["--gpu-memory-utilization", "0.5"])
    assert len(out) == 1
    argv = shlex.split(out[0])
    assert argv[:3] == ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "vllm", "serve"]
    assert argv[argv.index("--port") + 1] == "8001" and argv[argv.index("--max-loras") + 1] == "3"
    assert argv[-2:] == ["--gpu-memory-utilization", "0.5"]
    assert f"small={(adapters / 'small').resolve()}" in argv


def test_run_without_vllm_says_how_to_install(tiny, monkeypatch, tmp_path):
    base, adapters = tiny
    monkeypatch.setenv("LORAPIPE_VLLM", str(tmp_path / "no-such-vllm"))
    monkeypatch.setattr(vllm.subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    with pytest.raises(ServeError, match=r"--engine vllm needs vLLM on a CUDA machine: pip install 'lorapipe\[vllm\]'"):
        vllm.run(base=str(base), adapters=adapters, warn=lambda m: None)


@pytest.mark.parametrize("args,code,text", [
    (["--engine", "vllm", "--dry-run"], 0, "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve "),
    (["--engine", "tgi"], None, "--engine: `tgi` is not an engine; use `builtin` or `vllm`"),
    (["--dry-run"], None, "--dry-run prints the vLLM command line: use it with --engine vllm"),
])
def test_serve_cli_engine_options(tiny, args, code, text):
    from typer.testing import CliRunner

    from lorapipe.cli import app

    base, adapters = tiny
    result = CliRunner().invoke(app, ["serve", "--base", str(base), "--adapters", str(adapters), *args])
    if code == 0:
        assert result.exit_code == 0, result.output
        assert result.output.startswith(text) and "--lora-modules big=" in result.output
    else:
        assert text in str(result.exception)
