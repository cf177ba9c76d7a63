"""Two processes pushing the same name at once, and a push killed with SIGKILL half-way."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from lorapipe.registry import UPLOAD_DELAY_ENV, Registry
from lorapipe.registry.testing import make_adapter_dir, make_run_dir

ROOT = Path(__file__).resolve().parents[2]

# Waits for a start file so both processes push at the same moment, then pushes each directory.
PUSHER = """
import sys, time
from pathlib import Path
from lorapipe.registry import Registry
url, go, *dirs = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.01)
reg = Registry(url)
for d in dirs:
    print(reg.push("shared", d, message=d), flush=True)
"""


def spawn_pushers(url: str, groups: list[list[Path]], tmp_path: Path, env: dict[str, str] | None = None):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, url, str(go), *map(str, dirs)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})})
             for dirs in groups]
    time.sleep(1.0)  # let both interpreters import and reach the start line
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split())
    return outs


def check_all_intact(reg: Registry, groups: list[list[Path]], refs: list[list[str]]) -> None:
    pushed = [d for g in groups for d in g]
    all_refs = [r for rs in refs for r in rs]
    assert len(set(all_refs)) == len(pushed), f"two pushes got the same version: {all_refs}"
    assert reg.versions("shared") == list(range(1, len(pushed) + 1))
    for dirs, rs in zip(groups, refs):
        for d, r in zip(dirs, rs):
            rec = reg.record(r)
            assert rec["message"] == str(d) and rec["source"]["path"] == str(d)  # each push kept its own record
            assert reg.verify(r)["ok"]
            w = reg.store.read(f"blobs/sha256/{rec['files']['adapter/adapter_model.safetensors'][:2]}/"
                               f"{rec['files']['adapter/adapter_model.safetensors']}")
            assert w == (d / "adapter_model.safetensors").read_bytes()


def test_concurrent_pushes_from_two_processes(tmp_path: Path) -> None:
    url = str(tmp_path / "registry")
    groups = [[make_adapter_dir(tmp_path / f"p{p}-{i}", seed=10 * p + i) for i in range(6)] for p in range(2)]
    refs = spawn_pushers(url, groups, tmp_path)
    check_all_intact(Registry(url), groups, refs)


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for the push to start writing blobs"
        time.sleep(0.02)


def test_kill_9_mid_push_leaves_no_version(tmp_path: Path) -> None:
    url = tmp_path / "registry"
    reg = Registry(url)
    assert reg.push("other", make_adapter_dir(tmp_path / "o")) == "other@v1"
    run = make_run_dir(tmp_path / "run", weights_bytes=3 << 20)  # 3 chunks: the weights are written slowly
    code = "import sys; from lorapipe.registry import Registry; Registry(sys.argv[1]).push('c', sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(url), str(run)], cwd=ROOT,
                            env={**os.environ, UPLOAD_DELAY_ENV: "0.5"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # kill while a blob is half written and at least one blob is complete. The weights' temp file
        # holding 1-2 of its 3 chunks has at least one 0.5 s chunk delay left before its rename, so the
        # kill lands inside the write (a small blob's temp file may be renamed between look and kill)
        def weights_mid_write() -> bool:
            sizes = []
            for tmp in (url / "blobs").rglob("*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    sizes.append(tmp.stat().st_size)
            return any(1 << 20 <= size <= 2 << 20 for size in sizes)

        _wait_for(lambda: weights_mid_write()
                  and sum(1 for p in (url / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")) > 4)
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -9
    assert any(p.name.endswith(".tmp") for p in (url / "blobs").rglob("*")), "killed outside a blob write"
    fresh = Registry(url)
    assert fresh.names() == ["other"] and fresh.versions("c") == []
    assert [r["name"] for r in fresh.ls()] == ["other"]
    # the next push of the same run works and is complete
    assert fresh.push("c", run) == "c@v1"
    assert fresh.verify("c@v1")["ok"] and fresh.verify("other")["ok"]
    out = fresh.pull("c@v1", tmp_path / "out")
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (run / "train" / "adapter" / "adapter_model.safetensors").read_bytes()


def test_concurrent_promotes_are_all_recorded(tmp_path: Path) -> None:
    url = str(tmp_path / "registry")
    reg = Registry(url)
    for i in range(3):
        reg.push("c", make_adapter_dir(tmp_path / f"a{i}", seed=i))
    go = tmp_path / "go"
    code = ("import sys, time; from pathlib import Path; from lorapipe.registry import Registry\n"
            "url, go, v = sys.argv[1:]\nwhile not Path(go).exists(): time.sleep(0.01)\n"
            "r = Registry(url)\nfor _ in range(5):\n"
            "    r.promote(f'c@v{v}', 'prod'); r.promote('c@v1', 'prod')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(go), str(v)], cwd=ROOT)
             for v in (2, 3)]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    events = reg.alias_history("c", "prod")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # every event's `previous` is the target of the event before it: no update was lost or reordered
    assert all(e["previous"] == prev["target"] for prev, e in itertools.pairwise(events))
    assert reg.aliases("c")["prod"] == events[-1]["target"]
