"""OpenAI's Files and fine-tuning jobs API, driven by the official `openai` SDK against `lorapipe serve`
running as a child process on a tiny random model (the slow test: the embedded SmolLM2 and the
README's script, verbatim)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml
from serve_support import reference_answer
from test_serve_cli import free_port, wait_healthy

ALICE, BOB, ADMIN = "sk-alice-0123456789", "sk-bob-0123456789ab", "sk-admin-0123456789"
TERMINAL = ("succeeded", "failed", "cancelled")
README = Path(__file__).resolve().parents[2] / "README.md"


def write_rows(path: Path, n: int) -> Path:
    """``n`` distinct chat examples (distinct enough that the split's dedup keeps them all)."""
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "rocket", "garden", "silver",
             "forest", "candle", "window", "marble", "violet", "anchor"]
    with open(path, "w") as f:
        for i in range(n):
            w = words[i % len(words)]
            f.write(json.dumps({"messages": [{"role": "system", "content": "Answer in one word."},
                                             {"role": "user", "content": f"Example {i}: say {w}"},
                                             {"role": "assistant", "content": f"{w} {i}"}]}) + "\n")
    return path


class Server:
    """`lorapipe serve` in a child process, restartable on the same data dir."""

    def __init__(self, base: Path, data_dir: Path, keys: Path | None = None):
        self.base, self.data_dir, self.keys = base, data_dir, keys
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "lorapipe", "serve", "--base", str(self.base), "--data-dir", str(self.data_dir),
               "--port", str(self.port), "--watch", "0.5"] + (["--keys", str(self.keys)] if self.keys else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "server.log", "ab"),
                                     env=env)
        wait_healthy(self.proc, self.port)
        return self

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key, max_retries=0, timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(120)

    def job_pid(self, job_id: str) -> int | None:
        with sqlite3.connect(self.data_dir / "ft.sqlite") as db:
            return db.execute("SELECT pid FROM jobs WHERE id=?", (job_id,)).fetchone()[0]


def wait_for(c: openai.OpenAI, job_id: str, until, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        assert job.status not in TERMINAL, (job.status, job.error)
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.3)


def first_metrics(c: openai.OpenAI, job_id: str):
    def seen(_job) -> bool:
        return any(e.type == "metrics" for e in c.fine_tuning.jobs.list_events(job_id, limit=50).data)

    return wait_for(c, job_id, seen)


def start_job(c: openai.OpenAI, rows: Path, epochs: int, model: str = "tiny-base", **kw):
    f = c.files.create(file=rows.open("rb"), purpose="fine-tune")
    return c.fine_tuning.jobs.create(model=model, training_file=f.id, seed=7, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 1}}}, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lorapipe.testing import build_tiny_model

    root = tmp_path_factory.mktemp("ft")
    base = build_tiny_model(root / "tiny-base")
    keys = root / "keys.yaml"
    keys.write_text(yaml.safe_dump({"admin_keys": [ADMIN], "keys": {ALICE: {"tenant": "alice"},
                                                                     BOB: {"tenant": "bob"}}}))
    (root / "data").mkdir()
    srv = Server(base, root / "data", keys).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def finished(server, tmp_path_factory):
    """One job of alice's, run to success: (job, the uploaded file, its events)."""
    c = server.client(ALICE)
    rows = write_rows(tmp_path_factory.mktemp("rows") / "train.jsonl", 12)
    upload = c.files.create(file=rows.open("rb"), purpose="fine-tune")
    assert upload.status == "processed" and upload.bytes == rows.stat().st_size
    job = c.fine_tuning.jobs.create(model="tiny-base", training_file=upload.id, suffix="unit", seed=3,
                                    metadata={"team": "search"},
                                    method={"type": "supervised", "supervised": {"hyperparameters": {
                                        "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 2}}})
    assert job.status == "validating_files" and job.organization_id == "alice"
    seen_events: set[str] = set()

    def done(j) -> bool:
        seen_events.update(e.id for e in c.fine_tuning.jobs.list_events(j.id, limit=5))
        return j.status == "succeeded"

    job = wait_for(c, job.id, done)
    return job, upload, rows


def test_a_job_trains_reports_and_serves_its_model(server, finished):
    job, upload, rows = finished
    c = server.client(ALICE)
    hex8 = job.id.split("-", 1)[1][:8]
    assert job.fine_tuned_model == f"ft:tiny-base:alice:unit:{hex8}"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2
    assert job.hyperparameters.learning_rate_multiplier == 2 and job.finished_at and job.trained_tokens > 0
    run = server.data_dir / "jobs" / job.id / "run"
    train_cfg = yaml.safe_load((server.data_dir / "jobs" / job.id / "pipeline.yaml").read_text())["train"]
    assert (train_cfg["num_train_epochs"], train_cfg["per_device_train_batch_size"]) == (2, 2)
    assert train_cfg["learning_rate"] == pytest.approx(4e-4)
    steps = json.loads((run / "train" / "manifest.json").read_text())["metrics"]["global_steps"]

    # events: newest first, paged with `after`, metrics with OpenAI's fields
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=7))  # auto-pages through every page
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    assert events[0].message == "The job has successfully completed" and events[-1].message.startswith("Created")
    assert len({e.id for e in events}) == len(events) and all(e.id.startswith("ftevent-") for e in events)
    metrics = [e.data for e in events if e.type == "metrics"]
    train = [m for m in metrics if m.get("valid_loss") is None]
    assert sorted(m["step"] for m in train) == list(range(1, int(steps) + 1))
    assert all(m["total_steps"] == steps and m["train_loss"] > 0 and 0 <= m["train_mean_token_accuracy"] <= 1
               for m in train)
    valid = [m for m in metrics if m.get("valid_loss") is not None]
    assert len(valid) == 2 and all(0 <= m["valid_mean_token_accuracy"] <= 1 for m in valid)  # once per epoch

    # checkpoints: one per epoch, newest first
    ckpts = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [k.step_number for k in ckpts] == [steps, steps // 2]
    assert ckpts[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{steps}"
    assert ckpts[0].id.startswith("ftckpt-") and ckpts[0].metrics.valid_loss == valid[0]["valid_loss"]

    # result file: the per-step CSV
    result = c.files.retrieve(job.result_files[0])
    assert result.purpose == "fine-tune-results"
    table = list(csv.DictReader(io.StringIO(c.files.content(result.id).text)))
    assert list(table[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in table] == list(range(1, int(steps) + 1))
    assert float(table[-1]["valid_loss"]) == pytest.approx(valid[0]["valid_loss"], rel=1e-5)

    # the model is served at once, and answers as the trained adapter does offline
    assert job.fine_tuned_model in {m.id for m in c.models.list()}
    question = [{"role": "user", "content": "Example 3: say cloud"}]
    r = c.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=6, temperature=0)
    assert r.model == job.fine_tuned_model and r.system_fingerprint.endswith(f"ft-unit-{hex8}@v1")
    assert r.choices[0].message.content.strip() == reference_answer(server.base, run / "train" / "adapter",
                                                                    question, 6)
    from lorapipe.registry import Registry

    record = Registry(server.data_dir / "registry").record(f"ft-unit-{hex8}@v1")
    assert job.id in record["message"]

    # files: list, content, and the job listing's cursor and metadata filter
    assert upload.id in {f.id for f in c.files.list(purpose="fine-tune")}
    assert c.files.content(upload.id).content == rows.read_bytes()
    assert [j.id for j in c.fine_tuning.jobs.list(metadata={"team": "search"})] == [job.id]
    assert c.fine_tuning.jobs.list(metadata={"team": "other"}).data == []


def test_another_tenant_sees_nothing_of_alices(server, finished):
    job, upload, _ = finished
    bob = server.client(BOB)
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.list_events(job.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(upload.id)
    assert job.id not in {j.id for j in bob.fine_tuning.jobs.list()}
    assert upload.id not in {f.id for f in bob.files.list()}
    assert job.fine_tuned_model not in {m.id for m in bob.models.list()}
    with pytest.raises(openai.PermissionDeniedError, match="may not use model"):
        bob.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="not a file of yours"):
        bob.fine_tuning.jobs.create(model="tiny-base", training_file=upload.id)
    with pytest.raises(openai.PermissionDeniedError):
        bob.models.delete(job.fine_tuned_model)
    assert job.id in {j.id for j in server.client(ADMIN).fine_tuning.jobs.list()}


def test_deleting_the_model_stops_serving_it(server, finished):
    job, _, _ = finished
    c = server.client(ALICE)
    assert c.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in {m.id for m in c.models.list()}
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("rows, code, says", [
    (3, "invalid_n_examples", "Training file has 3 example(s), but must have at least 10"),
    ("bad", "invalid_file_format", "line 2: messages[1].role must be one of"),
])
def test_a_bad_training_file_fails_the_job_as_openai_does(server, tmp_path, rows, code, says):
    path = write_rows(tmp_path / "train.jsonl", 3 if rows == 3 else 12)
    if rows == "bad":
        lines = path.read_text().splitlines()
        lines[1] = lines[1].replace('"role": "user"', '"role": "robot"')
        path.write_text("\n".join(lines) + "\n")
    c = server.client(ALICE)
    job = start_job(c, path, epochs=1)
    job = wait_for(c, job.id, lambda j: j.status in TERMINAL, timeout=60)
    assert job.status == "failed" and job.fine_tuned_model is None
    assert (job.error.code, job.error.param) == (code, "training_file")
    assert says in job.error.message
    assert c.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_cancel_kills_the_running_job(server, tmp_path):
    c = server.client(ALICE)
    job = start_job(c, write_rows(tmp_path / "train.jsonl", 10), epochs=50)
    first_metrics(c, job.id)
    pid = server.job_pid(job.id)
    assert c.fine_tuning.jobs.cancel(job.id).id == job.id
    job = wait_for(c, job.id, lambda j: j.status in TERMINAL, timeout=60)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        c.fine_tuning.jobs.cancel(job.id)


def test_pause_stops_at_a_checkpoint_and_resume_finishes(server, tmp_path):
    c = server.client(ALICE)
    # 15 epochs, 135 steps: with 5 (45 steps) a CI run once finished them all before the pause landed
    job = start_job(c, write_rows(tmp_path / "train.jsonl", 10), epochs=15)
    first_metrics(c, job.id)
    c.fine_tuning.jobs.pause(job.id)
    paused = wait_for(c, job.id, lambda j: j.status == "paused", timeout=120)
    at = max(k.step_number for k in c.fine_tuning.jobs.checkpoints.list(paused.id))
    assert at < 135  # stopped early, with a checkpoint of the step it stopped at
    c.fine_tuning.jobs.resume(job.id)
    done = wait_for(c, job.id, lambda j: j.status == "succeeded")
    events = list(c.fine_tuning.jobs.list_events(done.id, limit=1000))
    assert any(e.level == "warn" and e.message.startswith("resuming from") and e.message.endswith(f"checkpoint-{at}")
               for e in events)
    steps = [e.data["step"] for e in events if e.type == "metrics" and e.data.get("valid_loss") is None]
    assert sorted(steps) == list(range(1, 136))  # every step once: nothing redone, nothing skipped
    messages = [e.message for e in events]
    assert "The job was paused" in messages and any(m.startswith("The job was resumed") for m in messages)


def test_a_job_survives_the_server_being_killed(tmp_path, tiny_model_dir):
    (tmp_path / "data").mkdir()
    srv = Server(tiny_model_dir, tmp_path / "data").start()
    try:
        c = srv.client()
        # 20 epochs: the kill must land mid-training (with 3, a fast CPU finished the last two epochs
        # between the first checkpoint and the kill, and there was nothing to resume)
        job = start_job(c, write_rows(tmp_path / "train.jsonl", 10), epochs=20, model=tiny_model_dir.name,
                        suffix="kill")
        wait_for(c, job.id, lambda j: bool(c.fine_tuning.jobs.checkpoints.list(j.id).data))
        child = srv.job_pid(job.id)
        srv.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists() and "zombie" not in Path(f"/proc/{child}/status").read_text():
            assert time.monotonic() < deadline, "the training child outlived the server"
            time.sleep(0.2)
        srv.start()
        done = wait_for(srv.client(), job.id, lambda j: j.status == "succeeded")
        assert re.fullmatch(rf"ft:{tiny_model_dir.name}:local:kill:[0-9a-f]{{8}}", done.fine_tuned_model)
        assert any(e.message.startswith("resuming from") for e in srv.client().fine_tuning.jobs.list_events(job.id))
        r = srv.client().chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                                 messages=[{"role": "user", "content": "hi"}])
        assert r.model == done.fine_tuned_model
    finally:
        srv.stop()


def readme_script() -> str:
    text = README.read_text()
    section = text[text.index("## Coming from OpenAI fine-tuning"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_script_fine_tunes_the_embedded_model(tmp_path):
    """The README's SDK script, verbatim, against `lorapipe serve` on the embedded SmolLM2 (12 rows)."""
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "train.jsonl", 12)
    srv = Server(Path("smollm2-135m-instruct"), tmp_path / "data").start()
    try:
        env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{srv.port}/v1", "OPENAI_API_KEY": "unused"}
        out = subprocess.run([sys.executable, "-c", readme_script()], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, out.stderr
        assert re.search(r"^fine_tuned_model: ft:smollm2-135m-instruct:local:my-bot:[0-9a-f]{8}$", out.stdout, re.M)
        assert "status: succeeded" in out.stdout and "answer: " in out.stdout
    finally:
        srv.stop()
