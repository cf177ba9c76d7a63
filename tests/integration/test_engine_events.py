"""events.jsonl: written by every run, readable after a kill -9 mid-train, continued by the resumed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lorapipe.events import read_events
from tests.integration.test_engine_keys import project  # noqa: F401  (the fixture: a tiny project)


def _events(run: Path) -> list[dict]:
    return read_events(run / "events.jsonl")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_kill_mid_train_leaves_a_valid_stream_and_the_resumed_run_appends(project: Path) -> None:  # noqa: F811
    cfg = project / "pipeline.yaml"
    text = cfg.read_text().replace("max_steps: 2", "max_steps: 60").replace("save_steps: 2", "save_steps: 5")
    cfg.write_text(text.replace("eval_steps: 2", "eval_steps: 5"))  # a checkpoint every 5 steps
    run = project / "runs" / "keys"
    env = {**os.environ, "LORAPIPE_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lorapipe", "run", str(cfg)], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [e["step"] for e in _events(run) if e["type"] == "train_metrics"] if run.exists() else []
            if steps and max(steps) >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        trainers = _children(proc.pid)
        assert trainers, "a run that goes on to evaluate trains in a child process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        gone = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in trainers) and time.monotonic() < gone:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{pid}").exists() for pid in trainers), "the training child outlived the run"
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = _events(run)
    raw = (run / "events.jsonl").read_bytes()
    assert len(killed) == raw.count(b"\n") or len(killed) == raw.count(b"\n") - 1  # at most a torn tail
    assert [e["seq"] for e in killed] == list(range(1, len(killed) + 1))
    assert killed[0]["type"] == "run_started"
    assert any(e["type"] == "stage_started" and e["stage"] == "train" for e in killed)
    assert not any(e["type"] in ("run_finished", "stage_finished") and e.get("stage") == "train" for e in killed)
    with open(run / "events.jsonl", "ab") as f:  # as if the kill had torn a line in half
        f.write(b'{"seq": 99999, "type": "progr')

    r = subprocess.run([sys.executable, "-m", "lorapipe", "--json", "run", str(cfg)], cwd=project, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = _events(run)
    assert events[: len(killed)] == killed  # appended to, never rewritten
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    second = events[len(killed):]
    assert second[0]["type"] == "run_started" and second[-1]["type"] == "run_finished"
    assert second[0]["run"] != killed[0]["run"]
    done_before = {e["stage"] for e in killed if e["type"] == "stage_finished"}
    assert {e["stage"] for e in second if e["type"] == "stage_skipped"} == done_before
    resumed_steps = [e["step"] for e in second if e["type"] == "train_metrics"]
    assert resumed_steps[0] > 1 and resumed_steps[-1] == 60  # from the newest checkpoint, not step 1
    assert any(e["type"] == "eval_metrics" and "eval_loss" in e for e in second)
    assert second[-1]["ran"][-2:] == ["train", "evaluate"]


def test_requests_that_failed_for_good_are_reported_with_how_to_retry(tmp_path: Path) -> None:
    """4 of 30 teacher calls fail: `run --json` says so per stage (and the events do), and the next run
    retries just those."""
    import json
    import textwrap

    from typer.testing import CliRunner

    from lorapipe.cli import app

    (tmp_path / "flaky.py").write_text(textwrap.dedent('''
        import os, re
        def answer(messages, **params):
            text = messages[-1]["content"]
            n = int(re.search(r"message (\\d+)", text).group(1))
            if n % 8 == 3 and not os.environ.get("FLAKY_FIXED"):
                raise RuntimeError("endpoint hiccup")
            return '{"n": %d}' % n
        '''))
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": f"message {i}"}) + "\n" for i in range(30)))
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent("""\
        task: {name: flaky, description: Echo the number., system_prompt: Echo the number.}
        data: {inputs: inputs.jsonl}
        teacher: {kind: python, function: "flaky:answer", cache: false}
        """))
    cfg = str(tmp_path / "pipeline.yaml")
    res = CliRunner().invoke(app, ["--json", "generate", cfg])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["failed"] == 4
    events = read_events(tmp_path / "runs" / "flaky" / "events.jsonl")
    assert events[-1]["type"] == "run_finished" and events[-1]["failed"] == {"generate": 4}
    assert any(e["type"] == "warning" and "rerun the same command to retry only those" in e["text"] for e in events)

    os.environ["FLAKY_FIXED"] = "1"
    try:
        res = CliRunner().invoke(app, ["--json", "generate", cfg])
    finally:
        del os.environ["FLAKY_FIXED"]
    assert json.loads(res.stdout)["metrics"]["failed"] == 0
    started = [e for e in read_events(tmp_path / "runs" / "flaky" / "events.jsonl") if e["type"] == "stage_started"]
    assert started[-1]["why"] == ["4 failed request(s) to retry"]
