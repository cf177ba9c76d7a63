"""The engine: runs stages in order, owns their cache keys, and reports through one event stream.

For each stage the runner computes the *fingerprint* of everything the stage declares it depends on
(:mod:`lorapipe.pipeline.deps`). When ``run_dir/<stage>/manifest.json`` records the same fingerprint,
its outputs are intact and nothing failed for good, the stage is skipped; otherwise it runs, and the
stages after it see new input hashes. Stages never skip themselves. ``force=STAGE`` redoes that
stage from scratch (its folder is cleared: no journal, no checkpoint) and re-runs every stage after
it. A stage killed half-way left no manifest (the runner removes the old one before the body runs),
so the next run redoes it: generation resumes from its journal and the answer cache, training from
its newest checkpoint.

Every CLI verb, the jobs API and the UI call :meth:`Pipeline.run` or :meth:`Pipeline.run_stage`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.errors import ConfigError, LorapipeError
from lorapipe.events import EVENTS_FILE, EventBus, EventLog, WarningsToEvents
from lorapipe.llm.base import LLM
from lorapipe.manifest import MANIFEST, Manifest, atomic_write_json, sha256_json
from lorapipe.pipeline.deps import changed, fingerprint
from lorapipe.pipeline.stages import STAGES, Files, Stage, build

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "train" / "adapter"

    @property
    def failed(self) -> dict[str, int]:
        """Requests that failed for good, per stage (listed in that stage's failed.jsonl; a rerun retries)."""
        return {s: int(m.metrics["failed"]) for s, m in self.manifests.items() if m.metrics.get("failed")}


class Pipeline:
    """One config's engine. Clients (base model, teacher, judge) are built on first use and shared."""

    def __init__(self, cfg: PipelineConfig, *, teacher: LLM | None = None, judge: LLM | None = None,
                 events: EventBus | None = None, **options: Any):
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.events = events or EventBus()
        self.options = options  # e.g. resume= for the train stage (see lorapipe train --resume), train_process=
        self.current: str | None = None  # the stage running now
        self.forced = False  # whether it runs from scratch (--force): e.g. training ignores checkpoints
        self._clients: dict[str, LLM | None] = {"teacher": teacher, "judge": judge}
        self._base: tuple[Any, Any, Any] | None = None
        self._model_hashes: dict[str, str] = {}
        self._planned: set[str] = set()  # the stages of the current run()

    # -- shared dependencies ----------------------------------------------------------------------
    def base(self) -> tuple[Any, Any, Any]:
        """(model, tokenizer, info) of the base model, loaded once and shared by probe, a local
        teacher or judge, and the A/B."""
        if self._base is None:
            from lorapipe import models

            self.message(self.current, f"loading base model {self.cfg.base_model}")
            self._base = models.load(self.cfg.base_model)
        return self._base

    def model_hash(self, spec: str) -> str:
        if spec not in self._model_hashes:
            from lorapipe import models

            self._model_hashes[spec] = models.resolve(spec).weights_sha256
        return self._model_hashes[spec]

    def built(self, role: str) -> LLM | None:
        return self._clients.get(role)

    def _llm(self, role: str) -> LLM:
        from lorapipe.llm import make_llm

        llm_cfg = getattr(self.cfg, role)
        kw: dict[str, Any] = {}
        if llm_cfg.kind == "local" and (llm_cfg.model or self.cfg.base_model) == self.cfg.base_model:
            model, tok, _ = self.base()
            kw["model_and_tokenizer"] = (model, tok)
        if llm_cfg.kind == "python":
            kw["search_path"] = self.cfg.base_dir  # a teacher module may sit next to pipeline.yaml
        return make_llm(llm_cfg, cache_dir=self.run_dir / "cache", **kw)

    def teacher(self) -> LLM:
        if self._clients.get("teacher") is None:
            if self.cfg.teacher is None:
                raise ConfigError("this step needs a `teacher` section (openai, local or python)")
            self._clients["teacher"] = self._llm("teacher")
        return self._clients["teacher"]  # type: ignore[return-value]

    def judge(self) -> LLM | None:
        if self._clients.get("judge") is None and self.cfg.judge is not None:
            self._clients["judge"] = self._llm("judge")
        return self._clients.get("judge")

    # -- inputs -------------------------------------------------------------------------------------
    def raw_inputs(self, path: Path) -> list[dict[str, str]]:
        """Raw inputs from ``path``: the first ``data.max_inputs`` (the one place that limit applies)."""
        from lorapipe.data.formats import read_inputs

        rows = read_inputs(path, self.cfg.data.input_field, self.cfg.data.max_line_bytes)
        return rows[: self.cfg.data.max_inputs] if self.cfg.data.max_inputs else rows

    def inputs_from_rows(self, path: Path) -> list[dict[str, str]]:
        from lorapipe.data.formats import read_rows, row_id, user_text

        rows = read_rows(path, max_line_bytes=self.cfg.data.max_line_bytes)
        return [{"id": row_id(user_text(r)), "text": user_text(r)} for r in rows]

    def split_source(self) -> Path:
        cfg, d = self.cfg, self.run_dir
        if cfg.data.train_file is not None:
            return cfg.resolve(cfg.data.train_file)  # type: ignore[return-value]
        return d / ("augment/augmented.jsonl" if cfg.augment.enabled else "score/scored.jsonl")

    def train_files(self) -> tuple[Path, Path | None]:
        cfg, d = self.cfg, self.run_dir
        if cfg.data.eval_file is not None:
            return self.split_source(), cfg.resolve(cfg.data.eval_file)
        return d / "split" / "train.jsonl", d / "split" / "eval.jsonl"

    # -- events -------------------------------------------------------------------------------------
    def progress(self, stage: str | None) -> Callable[[str, int | None], Callable[[int], None]]:
        return self.events.progress(stage or "run")

    def message(self, stage: str | None, text: str) -> None:
        self.events.emit("message", stage, text=text)

    def train_in_child(self) -> bool:
        """Whether the train stage runs in a child process (:mod:`lorapipe.train.child`): by default
        when this run goes on to evaluate, whose decoding is ~20 % slower in the process that trained;
        the ``train_process`` option (True/False) decides otherwise."""
        choice = self.options.get("train_process", "auto")
        return "evaluate" in self._planned if choice == "auto" else bool(choice)

    def train_callback(self) -> Any:
        from lorapipe.train.events import EventsCallback

        return EventsCallback(self.events, "train")

    # -- stage bodies that need more than a few lines --------------------------------------------
    def train_launched(self, train_file: Path, eval_file: Path | None, out: Path) -> Manifest:
        """Train under `accelerate launch` on distributed.num_processes ranks; read back rank 0's manifest."""
        from lorapipe.train import distributed

        cfg = self.cfg
        if cfg.source is None:
            raise ConfigError("distributed.launcher: accelerate needs the config loaded from a file")
        worker = ["-m", "lorapipe", "train", str(cfg.source), "--train-file", str(train_file), "--out", str(out)]
        if eval_file is not None and eval_file.is_file():
            worker += ["--eval-file", str(eval_file)]
        # The ranks load the same file; --set values given to `run` must reach them too.
        worker += [f"--set={k}={json.dumps(v)}" for k, v in cfg.overrides.items() if k != "output_dir"]
        worker += [f"--set=output_dir={json.dumps(str(self.run_dir))}"]
        rc = distributed.launch(cfg, cfg.distributed.num_processes, worker,
                                echo=lambda msg: print(msg, file=sys.stderr, flush=True))
        manifest = Manifest.load(out)
        if rc != 0 or manifest is None:
            raise LorapipeError(f"distributed training failed (exit {rc}); rerun `lorapipe run` to resume "
                                "from the newest checkpoint")
        return manifest

    def evaluate(self, out: Path, files: Files) -> Manifest:
        from lorapipe.data.formats import read_rows
        from lorapipe.errors import DataError
        from lorapipe.evaluate import ab
        from lorapipe.models import load_adapter

        cfg = self.cfg
        adapter, eval_file = files.get("adapter"), files.get("eval")
        if adapter is None or not adapter.is_dir():
            raise DataError(f"evaluate: no adapter at {adapter}; run `lorapipe train` first or pass --adapter DIR")
        if eval_file is None or not eval_file.is_file():
            raise DataError(f"{eval_file}: eval rows not found; pass --eval-file FILE, set data.eval_file, or run "
                            f"`lorapipe run {cfg.source or 'CONFIG'}` first (its split stage writes split/eval.jsonl)")
        rows = read_rows(eval_file, system_prompt=cfg.task.system_prompt, max_line_bytes=cfg.data.max_line_bytes)
        if cfg.evaluate.max_inputs:
            rows = rows[: cfg.evaluate.max_inputs]
        model, tok, info = self.base()
        peft_model = load_adapter(model, adapter, base=info, allow_pickle=self.options.get("allow_pickle", False),
                                  allow_unverified=self.options.get("allow_unverified", False))
        log_file, probe_file = files.get("trainer_log"), files.get("probe")
        try:
            extra = ab.read_extra_sets(cfg)
            answers = (len(rows) + sum(map(len, extra.values()))) * len(ab.arms_for(cfg))
            tick = self.progress("evaluate")("A/B: base vs tuned answers", answers)
            m = ab.run(cfg, peft_model, tok, rows, out, judge=self.judge(), progress=tick,
                       trainer_log=ab.trainer_log_of(adapter, log_file),
                       probe=json.loads(probe_file.read_text()) if probe_file and probe_file.is_file() else None,
                       extra_sets=extra)
        finally:
            peft_model.unload()  # give the shared base model back without the adapter layers
        self.message("evaluate", ab.summary_text(json.loads((out / "ab.json").read_text())))
        return m

    # -- running ------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        return build(self)

    def _fingerprint(self, stage: Stage, files: Files) -> tuple[str, dict[str, str]]:
        return fingerprint(self.cfg, stage.deps(files), self.model_hash)

    def why_stale(self, out: Path, key: tuple[str, dict[str, str]]) -> list[str]:
        """Why the stage writing ``out`` must run (empty: it is up to date), given its current ``key``
        (:meth:`_fingerprint`): what changed, or what is missing."""
        old = Manifest.load(out)
        if old is None:
            return ["no finished run"]
        if old.metrics.get("failed"):  # some requests failed for good: give them another chance
            return [f"{old.metrics['failed']} failed request(s) to retry"]
        why = changed(old.config_hash, old.inputs, *key)
        if not why and not old.outputs_intact(out):
            why = ["outputs changed on disk"]
        return why

    def _run_one(self, stage: Stage, out: Path, files: Files, force: bool, result: RunResult) -> None:
        # Hashed once: a stage writes only under `out`, so what it reads is the same after its body.
        key = self._fingerprint(stage, files)
        why = ["--force"] if force else self.why_stale(out, key)
        if not why:
            self.events.emit("stage_skipped", stage.name)
            result.skipped.append(stage.name)
            result.manifests[stage.name] = Manifest.load(out)  # type: ignore[assignment]
            return
        if force and out.exists() and out == self.run_dir / stage.name:
            shutil.rmtree(out)  # from scratch: no journal, no checkpoint survives
        (out / MANIFEST).unlink(missing_ok=True)  # "done" only once the new manifest is written
        self.current, self.forced = stage.name, force
        self.events.emit("stage_started", stage.name, why=why)
        t0 = time.perf_counter()
        try:
            manifest = stage.body(out, files)
            manifest.config_hash, manifest.inputs = key  # the runner's key, over what the stage declared
            manifest.save(out)
        except BaseException as e:
            self.events.emit("stage_failed", stage.name, error=str(e) or type(e).__name__,
                             error_type=type(e).__name__)
            raise
        finally:
            self.current, self.forced = None, False
        seconds = round(time.perf_counter() - t0, 1)
        result.seconds[stage.name] = seconds
        result.ran.append(stage.name)
        result.manifests[stage.name] = manifest
        self.events.emit("stage_finished", stage.name, seconds=seconds, metrics=manifest.metrics)
        if manifest.metrics.get("failed"):
            self.events.emit("warning", stage.name, text=(
                f"{manifest.metrics['failed']} request(s) failed for good (see {out / 'failed.jsonl'}); "
                "rerun the same command to retry only those"))

    def _plan(self, only: Iterable[str] | None, until: str | None, explicit: bool = False) -> list[Stage]:
        only = list(only or [])
        # A stage asked for by name with explicit files runs even where the config leaves it out
        # (`lorapipe probe --inputs FILE` on a config without data.inputs).
        stages = [s for s in self.stages() if s.enabled or (explicit and s.name in only)]
        for name in [*(only or []), *([until] if until else [])]:
            if name not in STAGES:
                raise ConfigError(f"unknown stage `{name}`; stages are: {', '.join(STAGES)}")
        if until is not None:  # the stage and whatever it reads from, transitively
            by_name = {s.name: s for s in stages}
            keep, todo = set(), [until]
            while todo:
                n = todo.pop()
                if n in by_name and n not in keep:
                    keep.add(n)
                    todo.extend(by_name[n].needs)
            stages = [s for s in stages if s.name in keep]
        if only:
            stages = [s for s in stages if s.name in set(only)]
        return stages

    def run(self, force: str | None = None, only: Iterable[str] | None = None, until: str | None = None,
            files: dict[str, Files] | None = None, outs: dict[str, Path] | None = None,
            explicit: bool = False) -> RunResult:
        """Run the enabled stages in order (``only`` some; ``until`` a stage and what it needs).

        ``force``: redo that stage from scratch and re-run every stage after it. ``files`` and ``outs``
        point a stage at other input files or another output folder (per stage name).
        """
        if force is not None and force not in STAGES:
            raise ConfigError(f"--force: unknown stage `{force}`; stages are: {', '.join(STAGES)}")
        plan = self._plan(only, until, explicit)
        self._planned = {s.name for s in plan}
        if any(s.name in ("probe", "train", "evaluate") for s in plan):
            from lorapipe.models import check_spec

            check_spec(self.cfg.base_model)  # a base model that will not load stops the run before any paid call
        result = RunResult(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", self.cfg.resolved())
        event_log = EventLog(self.run_dir / EVENTS_FILE)
        detach = event_log.attach(self.events)
        handler = WarningsToEvents(self.events, lambda: self.current)
        logging.getLogger("lorapipe").addHandler(handler)
        t0 = time.perf_counter()
        try:
            self.events.emit("run_started", stages=[s.name for s in plan],
                             config=str(self.cfg.source) if self.cfg.source else None)
            forcing = False
            for stage in plan:
                forcing = forcing or stage.name == force
                out = (outs or {}).get(stage.name) or self.run_dir / stage.name
                stage_files = {**stage.files(), **(files or {}).get(stage.name, {})}
                self._run_one(stage, out, stage_files, forcing, result)
            atomic_write_json(self.run_dir / "run.json", {
                "ran": result.ran, "skipped": result.skipped, "seconds": result.seconds, "failed": result.failed,
                "key": sha256_json({k: m.key() for k, m in result.manifests.items()}),
            })
            self.events.emit("run_finished", ran=result.ran, skipped=result.skipped, failed=result.failed,
                             seconds=round(time.perf_counter() - t0, 1))
        except BaseException as e:
            self.events.emit("run_failed", error=str(e) or type(e).__name__, error_type=type(e).__name__)
            raise
        finally:
            logging.getLogger("lorapipe").removeHandler(handler)
            detach()
            event_log.close()
        return result

    def run_stage(self, name: str, *, files: Files | None = None, out: Path | None = None,
                  force: bool = False) -> Manifest:
        """One stage (skipped when up to date), optionally on other files or into another folder."""
        result = self.run(force=name if force else None, only=[name], files={name: files or {}},
                          outs={name: out} if out is not None else None, explicit=bool(files))
        if name not in result.manifests:
            raise ConfigError(f"stage `{name}` is disabled by this config")
        return result.manifests[name]


def run(cfg: PipelineConfig, force: str | None = None, **kw: Any) -> RunResult:
    """Run every enabled stage of ``cfg`` in order; see the module docstring for caching."""
    return Pipeline(cfg, **kw).run(force=force)
