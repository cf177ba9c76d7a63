"""The registry stores only adapters a load would accept, repairs corrupt blobs, and cleans up after killed
pushes (issue 19, items 2 and 5): push runs the adapter check, verify runs it on the stored copy, a push
of good content replaces a corrupt blob, `gc` removes `.tmp` leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorapipe.adapter_files import AdapterInvalid
from lorapipe.manifest import MANIFEST, Manifest
from lorapipe.registry import Registry
from lorapipe.registry import core as registry_core
from lorapipe.registry.core import blob_key
from lorapipe.registry.testing import make_adapter_dir, make_run_dir

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def tamper(d: Path) -> None:
    """Change the weights after the manifest hashed them (what an attacker or bit rot does)."""
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-1] ^= 0x01  # one bit
    (d / WEIGHTS).write_bytes(bytes(data))


def truncate_unverified(d: Path) -> None:
    (d / MANIFEST).unlink()
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-100])


def to_pickle(d: Path) -> None:
    (d / WEIGHTS).rename(d / "adapter_model.bin")
    (d / MANIFEST).unlink()
    Manifest(stage="train", config_hash="x").save(d)


def drop_manifest(d: Path) -> None:
    (d / MANIFEST).unlink()


@pytest.mark.parametrize("damage, flags, message", [
    (tamper, {}, "adapter_model.safetensors: sha256 mismatch"),
    (truncate_unverified, {"allow_unverified": True}, "corrupt adapter weights (the header describes"),
    (to_pickle, {}, "pickle weights can run code when loaded; refusing"),
    (drop_manifest, {}, "no manifest.json, so its files cannot be verified"),
])
def test_push_refuses_what_a_load_would_refuse(reg: Registry, tmp_path: Path, damage, flags, message) -> None:
    run = make_run_dir(tmp_path / "a")
    damage(run / "train" / "adapter")
    with pytest.raises(AdapterInvalid) as err:
        reg.push("c", run, **flags)
    assert "not pushed to" in str(err.value) and message in str(err.value)
    assert reg.names() == [] and not (Path(reg.url) / "blobs").exists()  # nothing stored


def test_push_takes_pickle_and_unverified_adapters_only_when_allowed(reg: Registry, tmp_path: Path) -> None:
    a = make_adapter_dir(tmp_path / "a")
    to_pickle(a)
    assert reg.push("c", a, allow_pickle=True) == "c@v1"
    assert reg.verify("c@v1", allow_pickle=True)["ok"]
    problems = reg.verify("c@v1")["problems"]  # the same switch at verify time
    assert len(problems) == 1 and "c@v1:adapter/adapter_model.bin: pickle weights" in problems[0]
    b = make_adapter_dir(tmp_path / "b", seed=1)
    drop_manifest(b)
    assert reg.push("c", b, allow_unverified=True) == "c@v2"
    assert reg.verify("c@v2", allow_unverified=True)["ok"]
    assert "no manifest.json" in reg.verify("c@v2")["problems"][0]


def test_verify_detects_a_tampered_adapter_stored_before_push_checked(reg: Registry, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run_dir(tmp_path / "a")
    tamper(run / "train" / "adapter")
    with monkeypatch.context() as m:  # what an older lorapipe, which did not check, would have stored
        m.setattr(registry_core, "verify_adapter_dir", lambda *a, **k: None)
        reg.push("c", run)
    res = reg.verify("c@v1")  # every blob hashes to its name: only the adapter check can see it
    assert not res["ok"] and len(res["problems"]) == 1
    assert "c@v1:adapter: adapter files do not match manifest.json" in res["problems"][0]
    assert "adapter_model.safetensors: sha256 mismatch" in res["problems"][0]


def test_push_of_good_content_repairs_a_corrupt_blob(reg: Registry, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a")
    reg.push("c", run)
    sha = reg.record("c@v1")["files"]["adapter/" + WEIGHTS]
    blob = Path(reg.url) / blob_key(sha)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")  # bit rot in the store
    assert not reg.verify("c@v1")["ok"]
    assert reg.push("c", run) == "c@v2"  # the same, good, files again
    assert reg.verify("c@v2")["ok"] and reg.verify("c@v1")["ok"]  # the shared blob was replaced
    assert blob.read_bytes() == (run / "train" / "adapter" / WEIGHTS).read_bytes()


def test_gc_removes_what_killed_pushes_left(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_adapter_dir(tmp_path / "a"))
    root = Path(reg.url)
    old_blob = root / "blobs" / "sha256" / "00" / ".00ab.xyz.tmp"
    old_blob.parent.mkdir(parents=True, exist_ok=True)
    old_blob.write_bytes(b"partial")
    old_record = root / "versions" / "c" / ".v2.json.abc.tmp"
    old_record.write_text('{"half": ')
    young = root / "blobs" / "sha256" / "00" / ".00cd.new.tmp"  # a push writing right now
    young.write_bytes(b"in progress")
    hour_ago = time.time() - 7200
    for p in (old_blob, old_record):
        os.utime(p, (hour_ago, hour_ago))
    res = reg.gc()
    assert sorted(res["removed"]) == ["blobs/sha256/00/.00ab.xyz.tmp", "versions/c/.v2.json.abc.tmp"]
    assert young.exists() and not old_blob.exists() and not old_record.exists()
    assert res["unreferenced"] == []
    assert reg.verify("c@v1")["ok"] and reg.gc(min_age_s=0)["removed"] == ["blobs/sha256/00/.00cd.new.tmp"]


def test_cli_push_refusal_and_gc(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a")
    tamper(run / "train" / "adapter")
    reg = tmp_path / "registry"
    cmd = [sys.executable, "-m", "lorapipe.cli", "registry"]
    res = subprocess.run([*cmd, "push", "c", str(run), "--registry", str(reg)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = " ".join(res.stderr.split())
    assert err.startswith(f"error: not pushed to {reg}: ") and "sha256 mismatch" in err
    (reg / "blobs").mkdir(parents=True)
    (reg / "blobs" / ".left.tmp").write_bytes(b"x")
    res = subprocess.run([*cmd, "gc", "--min-age", "0", "--json", "--registry", str(reg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and json.loads(res.stdout)["removed"] == ["blobs/.left.tmp"]


def test_registry_files_honour_the_umask(reg: Registry, tmp_path: Path) -> None:
    """Records and blobs are readable by the group and others when the umask says so (a shared registry,
    a server running as another user), not mkstemp's owner-only 0o600."""
    import stat

    old = os.umask(0o022)
    try:
        reg.push("c", make_adapter_dir(tmp_path / "a"))
    finally:
        os.umask(old)
    root = Path(reg.url)
    record = root / "versions" / "c" / "v1.json"
    blob = root / blob_key(reg.record("c@v1")["files"]["adapter/" + WEIGHTS])
    assert stat.S_IMODE(record.stat().st_mode) == 0o644 and stat.S_IMODE(blob.stat().st_mode) == 0o444
