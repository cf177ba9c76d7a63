"""``lorapipe run``: the stages in order, each skipped when its manifest already matches.

A stage's *key* is the hash of the config sections it depends on plus the sha256 of its input
files. When ``run_dir/<stage>/manifest.json`` holds the same key and its outputs are intact, the
stage is skipped; otherwise it runs and everything downstream sees new input hashes. Editing one
stage's config therefore re-runs that stage and whatever its new outputs feed, never anything
before it. A stage killed half-way left no manifest, so the next run redoes it (generation and
augmentation resume from their partial files, training from its newest checkpoint, and the
teacher's answers come from the response cache).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.errors import ConfigError
from lorapipe.manifest import Manifest, atomic_write_json, sha256_file, sha256_json
from lorapipe.progress import say

STAGES = ("probe", "generate", "score", "augment", "split", "train", "evaluate")


@dataclass
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections the stage depends on
    inputs: Callable[[], dict[str, Path]]  # logical name -> file, resolved when the stage is reached
    body: Callable[[Path], Manifest]
    enabled: bool = True


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


def stage_key(cfg: PipelineConfig, stage: Stage, inputs: dict[str, Path]) -> tuple[str, dict[str, str]]:
    hashes = {k: sha256_file(p) for k, p in sorted(inputs.items()) if p is not None}
    m = Manifest(stage=stage.name, config_hash=cfg.section_hash(*stage.sections), inputs=hashes)
    return m.key(), hashes


def is_fresh(cfg: PipelineConfig, stage: Stage, out_dir: Path) -> bool:
    old = Manifest.load(out_dir)
    if old is None:
        return False
    if old.metrics.get("failed"):  # some teacher requests failed for good: give them another chance
        return False
    key, _ = stage_key(cfg, stage, stage.inputs())
    return old.key() == key and old.outputs_intact(out_dir)


class Pipeline:
    """Builds the stage list for a config; clients (teacher, judge, models) are made on demand, once."""

    def __init__(self, cfg: PipelineConfig, *, teacher=None, judge=None):
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self._teacher, self._judge = teacher, judge
        self._base = None  # (model, tokenizer, info), loaded once and shared by probe/teacher/eval

    # -- lazily built dependencies -------------------------------------------------------------
    def base(self):
        if self._base is None:
            from lorapipe import models

            say(f"[dim]loading base model {self.cfg.base_model}[/]")
            self._base = models.load(self.cfg.base_model)
        return self._base

    def _llm(self, llm_cfg):
        from lorapipe.llm import make_llm

        kw = {}
        if llm_cfg.kind == "local" and (llm_cfg.model or self.cfg.base_model) == self.cfg.base_model:
            model, tok, _ = self.base()
            kw["model_and_tokenizer"] = (model, tok)
        if llm_cfg.kind == "python":
            kw["search_path"] = self.cfg.base_dir  # a teacher module may sit next to pipeline.yaml
        return make_llm(llm_cfg, cache_dir=self.run_dir / "cache", **kw)

    def teacher(self):
        if self._teacher is None:
            if self.cfg.teacher is None:
                raise ConfigError("this step needs a `teacher` section (openai, local or python)")
            self._teacher = self._llm(self.cfg.teacher)
        return self._teacher

    def judge(self):
        if self._judge is None and self.cfg.judge is not None:
            self._judge = self._llm(self.cfg.judge)
        return self._judge

    def raw_inputs(self) -> list[dict[str, str]]:
        from lorapipe.data.formats import read_inputs

        rows = read_inputs(self.cfg.resolve(self.cfg.data.inputs), self.cfg.data.input_field)
        return rows[: self.cfg.data.max_inputs] if self.cfg.data.max_inputs else rows

    # -- the stages ------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, d = self.cfg, self.run_dir
        ready = cfg.data.train_file is not None
        inputs_file = cfg.resolve(cfg.data.inputs)

        def _inputs(**files: Path | None) -> Callable[[], dict[str, Path]]:
            return lambda: {k: v for k, v in files.items() if v is not None}

        def probe(out: Path) -> Manifest:
            from lorapipe import probe as probe_mod
            from lorapipe.progress import bar

            model, tok, _ = self.base()
            inputs = self.raw_inputs() if inputs_file else self._inputs_from_rows()
            n = min(cfg.probe.n_inputs, len(inputs)) * cfg.probe.samples
            with bar("probe", n) as advance:
                m = probe_mod.run(cfg, model, tok, inputs, out, judge=self.judge(), progress=advance)
            say(probe_mod.summary(json.loads((out / "probe.json").read_text())))
            return m

        def generate(out: Path) -> Manifest:
            from lorapipe.data import generate as gen
            from lorapipe.progress import bar

            n = (cfg.generate.n_inputs or len(self.raw_inputs())) * cfg.generate.samples_per_input
            with bar("generate", n) as advance:
                return gen.run(cfg, self.teacher(), out, progress=advance)

        def score(out: Path) -> Manifest:
            from lorapipe.data import score as sc

            return sc.run(cfg, self.judge(), d / "generate" / "generated.jsonl", out)

        def augment(out: Path) -> Manifest:
            from lorapipe.data import augment as aug
            from lorapipe.progress import bar

            with bar("augment", None) as advance:
                return aug.run(cfg, self.teacher(), self.judge(), d / "score" / "scored.jsonl", out,
                               progress=advance)

        def split(out: Path) -> Manifest:
            from lorapipe.data import card
            from lorapipe.data import split as sp

            m = sp.run(cfg, self._split_source(), out)
            dirs = {name: d / name for name in ("generate", "score", "augment", "split") if (d / name).is_dir()}
            dirs["split"] = out
            llms = {k: v for k, v in (("teacher", self._teacher), ("judge", self._judge)) if v is not None}
            card.run(cfg, dirs, d / "data_card", llms=llms)
            return m

        def train(out: Path) -> Manifest:
            from lorapipe.train import distributed, trainer

            train_file, eval_file = self._train_files()
            if cfg.distributed.launcher == "accelerate" and not distributed.in_launched_process():
                return self._train_launched(train_file, eval_file, out)
            return trainer.run(cfg, train_file, eval_file, out)

        def evaluate(out: Path) -> Manifest:
            return self._evaluate(out)

        train_file, eval_file = self._train_files()
        return [
            Stage("probe", ("task", "base_model", "probe", "score", "judge"), _inputs(inputs=inputs_file), probe,
                  enabled=cfg.probe.enabled and (inputs_file is not None or ready)),
            Stage("generate", ("task", "teacher", "generate", "data"), _inputs(inputs=inputs_file), generate,
                  enabled=not ready),
            Stage("score", ("task", "score", "judge"), _inputs(generated=d / "generate" / "generated.jsonl"),
                  score, enabled=not ready),
            Stage("augment", ("task", "teacher", "judge", "augment", "score"),
                  _inputs(scored=d / "score" / "scored.jsonl"), augment, enabled=not ready and cfg.augment.enabled),
            Stage("split", ("split",), lambda: {"source": self._split_source()}, split,
                  enabled=cfg.data.eval_file is None),
            Stage("train", ("task", "base_model", "lora", "train"),
                  lambda: dict(zip(("train", "eval"), self._train_files())), train),
            Stage("evaluate", ("task", "base_model", "evaluate", "score", "judge"),
                  lambda: {"adapter": d / "train" / "adapter" / "adapter_model.safetensors",
                           "eval": self._train_files()[1],
                           **{f"extra_set:{x.name}": cfg.resolve(x.file) for x in cfg.evaluate.extra_sets}}, evaluate,
                  enabled=eval_file is not None or cfg.data.eval_file is None),
        ]

    def _inputs_from_rows(self) -> list[dict[str, str]]:
        from lorapipe.data.formats import read_rows, row_id, user_text

        rows = read_rows(self.cfg.resolve(self.cfg.data.train_file))
        return [{"id": row_id(user_text(r)), "text": user_text(r)} for r in rows]

    def _split_source(self) -> Path:
        cfg, d = self.cfg, self.run_dir
        if cfg.data.train_file is not None:
            return cfg.resolve(cfg.data.train_file)
        if cfg.augment.enabled:
            return d / "augment" / "augmented.jsonl"
        return d / "score" / "scored.jsonl"

    def _train_files(self) -> tuple[Path, Path | None]:
        cfg, d = self.cfg, self.run_dir
        if cfg.data.eval_file is not None:
            return self._split_source(), cfg.resolve(cfg.data.eval_file)
        return d / "split" / "train.jsonl", d / "split" / "eval.jsonl"

    def _train_launched(self, train_file: Path, eval_file: Path | None, out: Path) -> Manifest:
        """Train under `accelerate launch` on distributed.num_processes ranks; read back rank 0's manifest."""
        import sys

        from lorapipe.errors import LorapipeError
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

    def _evaluate(self, out: Path) -> Manifest:
        from lorapipe.data.formats import read_rows
        from lorapipe.evaluate import ab
        from lorapipe.models import load_adapter
        from lorapipe.progress import bar

        cfg, d = self.cfg, self.run_dir
        model, tok, _ = self.base()
        peft_model = load_adapter(model, d / "train" / "adapter")
        log_file, probe_file = d / "train" / "trainer_log.json", d / "probe" / "probe.json"
        try:
            rows = read_rows(self._train_files()[1], system_prompt=cfg.task.system_prompt)
            if cfg.evaluate.max_inputs:
                rows = rows[: cfg.evaluate.max_inputs]
            extra = ab.read_extra_sets(cfg)
            arms = 3 if cfg.evaluate.few_shot_arm and cfg.teacher and cfg.teacher.few_shot else 2
            with bar("A/B base vs tuned", (len(rows) + sum(map(len, extra.values()))) * arms) as advance:
                m = ab.run(cfg, peft_model, tok, rows, out, judge=self.judge(), progress=advance,
                           trainer_log=json.loads(log_file.read_text()) if log_file.is_file() else None,
                           probe=json.loads(probe_file.read_text()) if probe_file.is_file() else None,
                           extra_sets=extra)
        finally:
            peft_model.unload()  # give the shared base model back without the adapter layers
        say(ab.summary_text(json.loads((out / "ab.json").read_text())))
        return m

    # -- running -----------------------------------------------------------------------------
    def run(self, force: str | None = None, only: set[str] | None = None) -> RunResult:
        if force is not None and force not in STAGES:
            raise ConfigError(f"--force: unknown stage `{force}`; stages are: {', '.join(STAGES)}")
        result = RunResult(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", self.cfg.resolved())
        forcing = False
        for stage in self.stages():
            if not stage.enabled or (only and stage.name not in only):
                continue
            forcing = forcing or stage.name == force
            out = self.run_dir / stage.name
            if not forcing and is_fresh(self.cfg, stage, out):
                say(f"[green]✓[/] {stage.name}: up to date (skipped)")
                result.skipped.append(stage.name)
                result.manifests[stage.name] = Manifest.load(out)  # type: ignore[assignment]
                continue
            say(f"[bold cyan]▶ {stage.name}[/]")
            t0 = time.perf_counter()
            manifest = stage.body(out)
            # Record the key the runner checks (config of the stage's sections + input hashes).
            _, hashes = stage_key(self.cfg, stage, stage.inputs())
            manifest.config_hash = self.cfg.section_hash(*stage.sections)
            manifest.inputs = hashes
            manifest.save(out)
            result.seconds[stage.name] = round(time.perf_counter() - t0, 1)
            result.ran.append(stage.name)
            result.manifests[stage.name] = manifest
            say(f"[green]✓[/] {stage.name} done in {result.seconds[stage.name]:.0f} s")
        atomic_write_json(self.run_dir / "run.json", {
            "ran": result.ran, "skipped": result.skipped, "seconds": result.seconds,
            "key": sha256_json({k: m.key() for k, m in result.manifests.items()}),
        })
        return result


def run(cfg: PipelineConfig, force: str | None = None, **kw: Any) -> RunResult:
    """Run every enabled stage of ``cfg`` in order; see the module docstring for caching."""
    return Pipeline(cfg, **kw).run(force=force)
