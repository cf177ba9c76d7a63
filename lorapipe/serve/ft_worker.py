"""The fine-tuning service of one server: the queue's worker, and the source that serves its results.

:class:`FineTuning` owns the data directory (:mod:`lorapipe.serve.ft_store`). Its worker thread
runs one job at a time, each in a **child process** (``python -m lorapipe --json train
jobs/<id>/pipeline.yaml``, :mod:`lorapipe.serve.ft_runs`), so a crash, an out-of-memory kill or a
cancel never takes the server down; the child dies with the server (``PR_SET_PDEATHSIG`` on Linux).
The worker alone writes the job's state: it reads the child's ``events.jsonl`` and checkpoint
folders into job events and checkpoints, and when the child exits it pushes the adapter to the
registry (the job id in the version's message) and hot-loads it as ``ft:{base}:{org}:{suffix}:{id}``.

Statuses: ``validating_files`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` |
``cancelled``; ``running`` -> ``paused`` (a checkpoint is written first) -> ``queued`` on resume.
After a restart, ``running`` jobs start again first and resume from their newest checkpoint (the
engine skips finished stages; the trainer resumes exactly); queued ones stay queued.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lorapipe.events import EVENTS_FILE, read_events
from lorapipe.serve import ft_runs
from lorapipe.serve.adapters import AdapterNotFound, ResolvedAdapter
from lorapipe.serve.ft_store import Store
from lorapipe.serve.ft_validate import FileProblem, as_messages, check_file
from lorapipe.train.child import die_with_parent

log = logging.getLogger(__name__)
PAUSE_TIMEOUT_S = 600.0  # a child that has not stopped at a checkpoint by then is killed (it resumes from the last)
STOP_FILE_ENV = "LORAPIPE_STOP_FILE"  # lorapipe.train.events reads it (not imported: it would load transformers)


class FineTunedSource:
    """An :class:`~lorapipe.serve.adapters.AdapterSource` of the ``ft:`` models of succeeded jobs."""

    def __init__(self, store: Store, registry: Any, cache_dir: Path):
        from lorapipe.serve.registry_source import RegistryAdapterSource

        self.store = store
        self._registry = RegistryAdapterSource(registry, cache_dir)

    def resolve(self, name: str) -> ResolvedAdapter:
        ref = self.store.fine_tuned().get(name) if name.startswith("ft:") else None
        if ref is None:
            raise AdapterNotFound(f"model `{name}` not found: no fine-tuning job made it")
        return dataclasses.replace(self._registry.resolve(ref), name=name)

    def snapshot(self) -> dict[str, str]:
        return self.store.fine_tuned()


class FineTuning:
    """Files, jobs and the worker of one server (see the module docstring)."""

    def __init__(self, data_dir: str | Path, base_spec: str, *, registry: str | None = None, poll_s: float = 0.5):
        from lorapipe.registry import Registry

        self.store = Store(data_dir)
        self.base_spec = base_spec
        self.registry = Registry(registry or self.store.root / "registry")
        self.source = FineTunedSource(self.store, self.registry, self.store.root / "adapters")
        self.poll_s = poll_s
        self.engine: Any = None  # the server's Engine (tokenizer, context, hot-load), set by attach()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._child_job: str | None = None
        self._child_started = 0.0
        self._pause_asked = 0.0
        self._latest: dict[str, dict[str, Any]] = {}

    def attach(self, engine: Any) -> FineTuning:
        self.engine = engine
        return self

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        for job in self.store.jobs_with_status("running"):
            self._kill_stale(job)
            self.store.add_event(job["id"], "The server restarted; the job resumes from its last checkpoint")
        self._thread = threading.Thread(target=self._loop, name="lorapipe-ft-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker; a running job's child is stopped and the job stays ``running`` (it resumes)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._child is not None and self._child.poll() is None:
            self._kill(self._child)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("fine-tuning worker")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def step(self) -> None:
        """One round: check new jobs' files, follow the running child, start the next job."""
        for job in self.store.jobs_with_status("validating_files"):
            self._validate(job)
        if self._child is not None:
            self._follow()
        if self._child is None and not self._stop.is_set():
            nxt = self.store.jobs_with_status("running") or self.store.jobs_with_status("queued")
            if nxt:
                self._launch(nxt[0])

    # ------------------------------------------------------------------ requests from the API
    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.store.update_job(job_id, control="cancel")
        if self._child_job != job_id:
            job = self._finish(job_id, "cancelled", "The job was cancelled")
        self.wake()
        return job

    def pause(self, job_id: str) -> dict[str, Any]:
        if self._child_job != job_id:
            self.store.add_event(job_id, "The job was paused")
            return self.store.update_job(job_id, status="paused", control=None)
        job = self.store.update_job(job_id, control="pause")
        (self.store.job_dir(job_id) / ft_runs.STOP_FILE).touch()
        self._pause_asked = time.monotonic()
        self.store.add_event(job_id, "Pausing: the job stops after its next step, with a checkpoint")
        return job

    def resume(self, job_id: str) -> dict[str, Any]:
        (self.store.job_dir(job_id) / ft_runs.STOP_FILE).unlink(missing_ok=True)
        self.store.add_event(job_id, "The job was resumed; it continues from its last checkpoint")
        job = self.store.update_job(job_id, status="queued", control=None)
        self.wake()
        return job

    # ------------------------------------------------------------------ validating
    def _count_tokens(self, messages: list[dict[str, Any]]) -> int:
        tok = self.engine.tokenizer
        text = tok.apply_chat_template(messages, tokenize=False)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def _validate(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        self.store.add_event(jid, f"Validating training file: {job['training_file']}" + (
            f" and validation file: {job['validation_file']}" if job["validation_file"] else ""))
        job_dir = self.store.job_dir(jid)
        job_dir.mkdir(parents=True, exist_ok=True)
        try:
            checked = {}
            for param, out in (("training_file", ft_runs.TRAIN_ROWS), ("validation_file", ft_runs.VALID_ROWS)):
                fid = job[param]
                if fid is None:
                    continue
                f = self.store.file(fid)
                if f is None:
                    raise FileProblem("file_not_found", f"{param} {fid} was deleted before the job started", param)
                path = self.store.blob_path(f["sha256"])
                checked[param] = check_file(path, param, self._count_tokens, self.engine.max_context)
                _write_rows(path, job_dir / out)
        except FileProblem as e:
            self.store.update_job(jid, error=e.error())
            self._finish(jid, "failed", e.message, level="error")
            return
        hp = ft_runs.resolve_hyperparameters(job["hyperparameters"] or {})
        job = self.store.update_job(jid, hyperparameters=hp)
        longest = max(c.max_tokens for c in checked.values())
        ft_runs.write_job(job_dir, job, self.base_spec, checked["training_file"].examples, longest,
                          self.engine.max_context, "validation_file" in checked)
        self.store.update_job(jid, status="queued")
        self.store.add_event(jid, f"Files validated ({checked['training_file'].examples} training examples), "
                             "moving job to queued state")

    # ------------------------------------------------------------------ running
    def _launch(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        job_dir = self.store.job_dir(jid)
        (job_dir / ft_runs.STOP_FILE).unlink(missing_ok=True)
        env = {**os.environ, STOP_FILE_ENV: str(job_dir / ft_runs.STOP_FILE)}
        with open(job_dir / "worker.log", "ab") as err, open(job_dir / "worker.out", "ab") as out:
            self._child = subprocess.Popen([sys.executable, "-m", "lorapipe", "--json", "train", ft_runs.CONFIG_FILE],
                                           cwd=job_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                           start_new_session=True, preexec_fn=die_with_parent)
        self._child_job, self._child_started = jid, time.time()
        if job["status"] != "running":
            self.store.add_event(jid, "Fine-tuning job started")
        self.store.update_job(jid, status="running", pid=self._child.pid)

    def _follow(self) -> None:
        assert self._child is not None and self._child_job is not None
        jid = self._child_job
        job = self.store.job(jid)
        assert job is not None
        if job["control"] == "cancel":
            self._kill(self._child)
        elif job["control"] == "pause" and time.monotonic() - self._pause_asked > PAUSE_TIMEOUT_S:
            self._kill(self._child)
        self._ingest(job)
        rc = self._child.poll()
        if rc is None:
            return
        self._child, self._child_job = None, None
        job = self.store.job(jid)
        assert job is not None
        self._ingest(job)
        if job["control"] == "cancel":
            self._finish(jid, "cancelled", "The job was cancelled")
        elif job["control"] == "pause":
            (self.store.job_dir(jid) / ft_runs.STOP_FILE).unlink(missing_ok=True)
            self.store.update_job(jid, status="paused", control=None, pid=None, estimated_finish=None)
            self.store.add_event(jid, "The job was paused")
        elif rc == 0:
            self._succeed(job)
        else:
            self.store.update_job(jid, error={"code": "training_failed", "message": self._failure(jid, rc),
                                              "param": None})
            self._finish(jid, "failed", "The job failed", level="error")

    def _ingest(self, job: dict[str, Any]) -> None:
        """Copy new engine events and checkpoints of ``job`` into its job events and checkpoints."""
        jid = job["id"]
        run_dir = self.store.job_dir(jid) / ft_runs.RUN_DIR
        latest = self._latest.setdefault(jid, {})
        seq = job["events_seq"]
        for e in read_events(run_dir / EVENTS_FILE, after=seq):
            seq = max(seq, int(e.get("seq") or 0))
            for level, kind, message, data in ft_runs.to_job_events(e, latest):
                self.store.add_event(jid, message, level=level, type=kind, data=data, created_at=ft_runs.event_time(e))
        fields: dict[str, Any] = {"events_seq": seq}
        step, total = latest.get("step"), latest.get("total_steps")
        if step and total and self._child_job == jid:
            elapsed = time.time() - self._child_started
            fields["estimated_finish"] = int(time.time() + elapsed / step * max(0, total - step))
        self.store.update_job(jid, **fields)
        for step, metrics in ft_runs.checkpoints(run_dir):
            name = f"{job_model(job, self)}:ckpt-step-{step}"
            if self.store.add_checkpoint(jid, step, metrics, name):
                self.store.add_event(jid, f"Checkpoint created at step {step}")

    def _succeed(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        run_dir = self.store.job_dir(jid) / ft_runs.RUN_DIR
        model = job_model(job, self)
        name = ft_runs.slug(f"ft-{job['suffix'] + '-' if job['suffix'] else ''}{jid.split('-', 1)[-1][:8]}")
        ref = self.registry.push(name, run_dir, message=f"OpenAI fine-tuning job {jid} ({model})")
        sha, size = self.store.put_blob(io.BytesIO(ft_runs.results_csv(run_dir)))
        result = self.store.add_file(job["tenant"], "step_metrics.csv", "fine-tune-results", sha, size)
        manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
        tokens = manifest.get("metrics", {}).get("train_tokens")
        epochs = (job["hyperparameters"] or {}).get("n_epochs") or 1
        self.store.update_job(jid, fine_tuned_model=model, registry_ref=ref, result_files=[result["id"]],
                              trained_tokens=int(tokens * epochs) if tokens else None)
        self.store.add_event(jid, f"New fine-tuned model created: {model} (registry {ref})")
        self._finish(jid, "succeeded", "The job has successfully completed")
        if self.engine is not None:
            try:  # served at once; a failure here leaves it to load on first use (and says why in the log)
                self.engine.reload(model)
            except Exception as e:  # noqa: BLE001
                log.error("fine-tuned model %s not hot-loaded: %s", model, e)

    def _finish(self, jid: str, status: str, message: str, level: str = "info") -> dict[str, Any]:
        self.store.add_event(jid, message, level=level)
        self._latest.pop(jid, None)
        return self.store.update_job(jid, status=status, finished_at=int(time.time()), control=None, pid=None,
                                     estimated_finish=None)

    def _failure(self, jid: str, rc: int) -> str:
        run_dir = self.store.job_dir(jid) / ft_runs.RUN_DIR
        for e in reversed(read_events(run_dir / EVENTS_FILE)):
            if e.get("type") in ("stage_failed", "run_failed"):
                return f"{e.get('stage') or 'run'} failed: {e.get('error')}"
        tail = (self.store.job_dir(jid) / "worker.log").read_text(errors="replace").strip().splitlines()[-3:]
        return f"the training process exited with code {rc}: {' '.join(tail)[-500:]}"

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(30)

    def _kill_stale(self, job: dict[str, Any]) -> None:
        """A child left by a server that died without taking it along (no PDEATHSIG): stop it."""
        pid = job.get("pid")
        if not pid:
            return
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return
        if Path(cwd) == self.store.job_dir(job["id"]).resolve():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def job_model(job: dict[str, Any], ft: FineTuning) -> str:
    base = ft.engine.base_name if ft.engine is not None else ft.base_spec
    return ft_runs.model_name(Path(base).name, job["org"], job["suffix"], job["id"])


def _write_rows(src: Path, dest: Path) -> None:
    """The checked rows as canonical chat rows (what the engine reads)."""
    with open(src, "rb") as f, open(dest, "w", encoding="utf-8") as out:
        for raw in f:
            if raw.strip():
                out.write(json.dumps({"messages": as_messages(json.loads(raw))}, ensure_ascii=False) + "\n")


__all__ = ["FineTunedSource", "FineTuning", "job_model"]
