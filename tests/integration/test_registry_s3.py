"""The registry on a real S3-compatible server (moto in server mode on a loopback port): round trip,
exclusive create (If-None-Match), concurrent pushes from two processes, and kill -9 mid-push."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from lorapipe.errors import RegistryError
from lorapipe.registry import UPLOAD_DELAY_ENV, Registry
from lorapipe.registry.testing import make_adapter_dir, make_run_dir
from lorapipe.serve.adapters import verify_adapter_dir
from lorapipe.serve.registry_source import RegistryAdapterSource

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "lorapipe-registry"

# Pushes each directory to the registry named on the command line, once a start file exists.
PUSHER = """
import json, os, sys, time
from pathlib import Path
from lorapipe.registry import Registry
url, go, *dirs = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.01)
reg = Registry(url, storage_options=json.loads(os.environ["LORAPIPE_REGISTRY_OPTIONS"]))
for d in dirs:
    print(reg.push("shared", d, message=d), flush=True)
"""


@pytest.fixture(scope="module")
def s3_options():
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield {"key": "testing", "secret": "testing",
           "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    server.stop()


@pytest.fixture()
def url() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"  # a fresh prefix per test


def test_round_trip(s3_options, url: str, tmp_path: Path) -> None:
    reg = Registry(url, storage_options=s3_options)
    run_a, run_b = make_run_dir(tmp_path / "a", r=8), make_run_dir(tmp_path / "b", r=16, seed=1, eval_loss=0.5)
    assert reg.push("contacts", run_a, message="first") == "contacts@v1"
    assert reg.push("contacts", run_b, parent="contacts@v1") == "contacts@v2"
    reg.promote("contacts@v1", "prod")
    reg.promote("contacts@v2", "prod")
    assert reg.rollback("contacts", "prod")["target"] == 1
    again = Registry(url, storage_options=s3_options)  # nothing lives in the client
    assert str(again.resolve("contacts")) == "contacts@v1" and str(again.resolve("contacts@latest")) == "contacts@v2"
    d = again.diff("contacts@v1", "contacts@v2")
    assert {"key": "lora.r", "old": 8, "new": 16} in d["config"]
    assert {m["key"]: m["delta"] for m in d["metrics"]}["train.eval_loss"] == pytest.approx(-0.5)
    assert again.verify("contacts@v2")["ok"]
    out = again.pull("contacts@prod", tmp_path / "pulled")
    assert (out / "data" / "train.jsonl").read_bytes() == (run_a / "split" / "train.jsonl").read_bytes()
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (run_a / "train" / "adapter" / "adapter_model.safetensors").read_bytes()
    # content addressing: the same run again adds a version but no blob
    def blobs() -> list[str]:
        return list(reg.store.fs.find(f"{reg.store.root}/blobs"))
    n = len(blobs())
    assert reg.push("contacts", run_a) == "contacts@v3" and len(blobs()) == n
    with pytest.raises(RegistryError, match=r"`contacts@v9`: contacts has no version v9; it has v1..v3"):
        reg.resolve("contacts@v9")
    with pytest.raises(RegistryError, match=rf"`nope`: no adapter named `nope` in {url}; known: contacts"):
        reg.resolve("nope")


def test_exclusive_create_is_conditional_put(s3_options, url: str) -> None:
    reg = Registry(url, storage_options=s3_options)
    assert reg.store.create("versions/x/v1.json", b"first") is True
    assert reg.store.create("versions/x/v1.json", b"second") is False
    assert reg.store.read("versions/x/v1.json") == b"first"


def test_concurrent_pushes_from_two_processes(s3_options, url: str, tmp_path: Path) -> None:
    groups = [[make_adapter_dir(tmp_path / f"p{p}-{i}", seed=10 * p + i) for i in range(4)] for p in range(2)]
    go = tmp_path / "go"
    env = {**os.environ, "LORAPIPE_REGISTRY_OPTIONS": json.dumps(s3_options)}
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, url, str(go), *map(str, dirs)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for dirs in groups]
    time.sleep(1.5)
    go.touch()
    refs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        refs.append(out.split())
    flat = [r for rs in refs for r in rs]
    assert sorted(flat, key=lambda r: int(r.split("@v")[1])) == [f"shared@v{i}" for i in range(1, 9)]
    reg = Registry(url, storage_options=s3_options)
    assert reg.versions("shared") == list(range(1, 9))
    for dirs, rs in zip(groups, refs):
        for d, r in zip(dirs, rs):
            rec = reg.record(r)
            assert rec["message"] == str(d) and reg.verify(r)["ok"]


def test_kill_9_mid_push_leaves_no_version(s3_options, url: str, tmp_path: Path) -> None:
    reg = Registry(url, storage_options=s3_options)
    run = make_run_dir(tmp_path / "run")
    code = ("import json, os, sys; from lorapipe.registry import Registry\n"
            "Registry(sys.argv[1], storage_options=json.loads(os.environ['LORAPIPE_REGISTRY_OPTIONS']))"
            ".push('c', sys.argv[2])")
    env = {**os.environ, "LORAPIPE_REGISTRY_OPTIONS": json.dumps(s3_options), UPLOAD_DELAY_ENV: "0.4"}
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(run)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(reg.store.fs.find(f"{reg.store.root}/blobs")) < 3:  # some blobs uploaded, more to come
            assert proc.poll() is None and time.monotonic() < deadline, "push ended before it could be killed"
            reg.store.fs.invalidate_cache()
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -9
    fresh = Registry(url, storage_options=s3_options)
    assert fresh.versions("c") == [] and fresh.names() == []
    assert fresh.push("c", run) == "c@v1"
    assert fresh.verify("c@v1")["ok"]


def test_adapter_source_over_s3(s3_options, url: str, tmp_path: Path) -> None:
    reg = Registry(url, storage_options=s3_options)
    reg.push("c", make_run_dir(tmp_path / "a"))
    reg.push("c", make_run_dir(tmp_path / "b", seed=1))
    src = RegistryAdapterSource(reg, tmp_path / "cache")
    assert src.poll() == {"c": "c@v2", "c@latest": "c@v2"}
    reg.promote("c@v1", "prod")
    assert src.poll() == {"c": "c@v1", "c@prod": "c@v1"}
    got = src.resolve("c")
    assert got.version == "c@v1"
    verify_adapter_dir(got.path)
