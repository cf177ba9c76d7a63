"""`lorapipe generate` against a real loopback OpenAI-compatible server: kill -9 mid-run, rerun, and
count from the server's log that no row is lost or duplicated and no answered call is repeated;
then a run with 30 % injected faults (429/5xx/malformed/dropped connections) that still gets every row.

The kill is made deterministic by gating the server: the first 24 requests are answered, the next
ones hang (sleeping in the server), and the client is killed once the server has answered 24 and
the client's answer cache holds all 24. The rerun finds 16 answers in the stage journal (one full
batch), 8 in the answer cache, and asks the server only for the other 36.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from lorapipe.llm.cache import ResponseCache
from tests.fakes import FakeOpenAI

N_INPUTS = 60
CONCURRENCY = 4  # the stage journals every 4 * concurrency = 16 answers
ANSWERED_BEFORE_KILL = 24


def contact_answer(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    text = re.search(r"Input:\n<<<\n(.*?)\n>>>", prompt, re.DOTALL).group(1)
    email = re.search(r"[\w.]+@[\w.]+\w", text)
    name = re.search(r"\b([A-Z][a-z]+ [A-Z][a-z]+)\b", text)
    return json.dumps({"name": name and name.group(1), "email": email and email.group(0)})


def inputs() -> list[str]:
    first = ["Ann", "Bob", "Cai", "Dee", "Eli", "Fay"]
    return [f"Note {i}: {first[i % 6]} Person{chr(65 + i % 26)}x{i} writes from p{i}@mail{i}.org"
            for i in range(N_INPUTS)]


def write_config(tmp_path: Path, base_url: str, max_retries: int = 5) -> Path:
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in inputs()))
    cfg = {
        "task": {"name": "contacts", "description": "Extract the sender's name and e-mail.",
                 "system_prompt": "Return the sender as JSON.", "format_spec": '{"name": ..., "email": ...}'},
        "data": {"inputs": "inputs.jsonl"},
        "teacher": {"kind": "openai", "base_url": base_url, "model": "fake-model",
                    "api_key_env": "LORAPIPE_TEST_NO_SUCH_KEY", "concurrency": CONCURRENCY,
                    "max_retries": max_retries, "timeout_s": 20},
        "output_dir": "run",
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(cfg))
    return path


def cli(config: Path) -> list[str]:
    return [sys.executable, "-m", "lorapipe", "generate", str(config)]


def env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "LORAPIPE_QUIET": "1", "PYTHONPATH": str(root)}


def wait_for(cond, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"generate exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the run to reach the kill point")


def cached_answers(run_dir: Path) -> int:
    db = run_dir / "cache" / "llm-cache.sqlite"
    if not db.exists():
        return 0
    cache = ResponseCache(db)
    try:
        return len(cache)
    finally:
        cache.close()


def check_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "generate" / "generated.jsonl").read_text().splitlines()]
    users = Counter(r["messages"][1]["content"] for r in rows)
    assert set(users) == set(inputs()), "rows lost"
    assert set(users.values()) == {1}, "rows duplicated"
    for r in rows:
        assert r["messages"][-1]["content"] == contact_answer(
            {"messages": [{"content": f"Input:\n<<<\n{r['messages'][1]['content']}\n>>>"}]})
    return rows


@pytest.mark.timeout(300)
def test_kill_9_then_rerun_loses_duplicates_and_repeats_nothing(tmp_path):
    gate = {"open": False, "arrivals": 0}
    lock = threading.Lock()

    def latency(body: dict) -> float:
        with lock:
            gate["arrivals"] += 1
            n = gate["arrivals"]
        return 0.02 if gate["open"] or n <= ANSWERED_BEFORE_KILL else 120.0  # hang until the server stops

    with FakeOpenAI(contact_answer, latency_s=latency) as srv:
        config = write_config(tmp_path, srv.base_url)
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(cli(config), cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: srv.count("ok") == ANSWERED_BEFORE_KILL and srv.count("pending") == CONCURRENCY
                     and cached_answers(run_dir) == ANSWERED_BEFORE_KILL, proc=proc)
            journal = run_dir / "generate" / "generate.partial.jsonl"
            assert len(journal.read_text().splitlines()) == 1 + 16  # header + one batch
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        assert not (run_dir / "generate" / "generated.jsonl").exists()

        gate["open"] = True
        before = len(srv.log)
        rerun = subprocess.run(cli(config), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240,
                           check=False)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        log = srv.log

    check_rows(run_dir)
    answered = Counter(json.dumps(e.body["messages"]) for e in log if e.outcome == "ok")
    assert len(answered) == N_INPUTS and set(answered.values()) == {1}, "a call was answered twice"
    assert len(log) - before == N_INPUTS - ANSWERED_BEFORE_KILL  # the rerun asked only for what was missing
    manifest = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert manifest["extra"]["resumed"] == 16
    usage = manifest["extra"]["teacher_usage"]
    assert (usage["calls"], usage["cached"], usage["failed"]) == (N_INPUTS - ANSWERED_BEFORE_KILL, 8, 0)
    assert manifest["metrics"]["rows"] == N_INPUTS and manifest["metrics"]["failed"] == 0
    assert not (run_dir / "generate" / "generate.partial.jsonl").exists()


@pytest.mark.timeout(300)
def test_thirty_percent_faults_still_get_every_row(tmp_path):
    with FakeOpenAI(contact_answer, latency_s=0.005, fault_rate=0.3, seed=7) as srv:
        config = write_config(tmp_path, srv.base_url, max_retries=12)
        res = subprocess.run(cli(config), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240,
                           check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        log = srv.log
    rows = check_rows(tmp_path / "run")
    assert len(rows) == N_INPUTS
    faults = Counter(e.outcome for e in log if e.outcome != "ok")
    assert sum(faults.values()) >= 5, faults  # the faults really happened
    answered = Counter(json.dumps(e.body["messages"]) for e in log if e.outcome == "ok")
    assert set(answered.values()) == {1}
    assert not (tmp_path / "run" / "generate" / "failed.jsonl").exists()
