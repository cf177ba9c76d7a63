"""The stages: for each, what it depends on (:class:`~lorapipe.pipeline.deps.Deps`) and its one body.

A body gets the engine (for the shared base model, teacher, judge and event bus), its output folder
and its input files, calls the stage module's ``run()`` and returns its manifest. Input files are
named, so a CLI verb can point a stage at other files (``lorapipe eval --adapter DIR``) and still run
this body, under this key. Nothing here decides to skip: the runner does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lorapipe.config import PipelineConfig
from lorapipe.errors import DataError
from lorapipe.events import EventBus
from lorapipe.llm.base import LLM
from lorapipe.manifest import Manifest
from lorapipe.pipeline.deps import Deps, checks_code, llm_deps

Files = dict[str, Path | None]
STAGES = ("probe", "generate", "score", "augment", "split", "train", "evaluate")


class Host(Protocol):
    """What a stage body may ask of the engine (lorapipe.pipeline.runner.Pipeline)."""

    cfg: PipelineConfig
    run_dir: Path
    options: dict[str, Any]
    forced: bool
    events: EventBus

    def base(self) -> tuple[Any, Any, Any]: ...
    def teacher(self) -> LLM: ...
    def judge(self) -> LLM | None: ...
    def built(self, role: str) -> LLM | None: ...
    def raw_inputs(self, path: Path) -> list[dict[str, str]]: ...
    def inputs_from_rows(self, path: Path) -> list[dict[str, str]]: ...
    def split_source(self) -> Path: ...
    def train_files(self) -> tuple[Path, Path | None]: ...
    def progress(self, stage: str | None) -> Callable[[str, int | None], Callable[[int], None]]: ...
    def message(self, stage: str | None, text: str) -> None: ...
    def train_callback(self) -> Any: ...
    def train_in_child(self) -> bool: ...
    def train_launched(self, train_file: Path, eval_file: Path | None, out: Path) -> Manifest: ...
    def evaluate(self, out: Path, files: Files) -> Manifest: ...


@dataclass
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream stages whose outputs this one reads
    files: Callable[[], Files]  # its input files (resolved when the stage is reached)
    deps: Callable[[Files], Deps]  # everything its output depends on, given those files
    body: Callable[[Path, Files], Manifest]
    enabled: bool = True
    notes: dict[str, str] = field(default_factory=dict)


def _need(files: Files, name: str, stage: str, hint: str) -> Path:
    p = files.get(name)
    if p is None or not p.exists():
        raise DataError(f"{stage}: {p or name} not found; {hint}")
    return p


def build(p: Host) -> list[Stage]:
    """The stage list of ``p.cfg``, in order."""
    cfg, d = p.cfg, p.run_dir
    ready = cfg.data.train_file is not None
    inputs_file = cfg.resolve(cfg.data.inputs)
    template = cfg.resolve(cfg.generate.template)
    checks = checks_code(cfg)
    t_code, t_models = llm_deps(cfg, "teacher")
    j_code, j_models = llm_deps(cfg, "judge")
    base = {"base": cfg.base_model}

    # -- probe --------------------------------------------------------------------------------
    def probe_files() -> Files:
        return {"inputs": inputs_file} if inputs_file is not None else {"rows": p.split_source()}

    def probe(out: Path, files: Files) -> Manifest:
        from lorapipe import probe as probe_mod

        if files.get("inputs") is not None:
            items = p.raw_inputs(_need(files, "inputs", "probe", "set data.inputs or pass --inputs FILE"))
        else:
            items = p.inputs_from_rows(_need(files, "rows", "probe", "set data.inputs or data.train_file"))
        model, tok, _ = p.base()
        tick = p.progress("probe")("probe: base model answers", min(cfg.probe.n_inputs, len(items)) * cfg.probe.samples)
        m = probe_mod.run(cfg, model, tok, items, out, judge=p.judge(), progress=tick)
        p.message("probe", probe_mod.summary(json.loads((out / "probe.json").read_text())))
        return m

    # -- data ---------------------------------------------------------------------------------
    def generate(out: Path, files: Files) -> Manifest:
        from lorapipe.data import generate as gen

        inputs = files.get("inputs")
        given = p.raw_inputs(inputs) if inputs is not None else None
        return gen.run(cfg, p.teacher(), out, inputs=given, progress=p.progress("generate"))

    def score(out: Path, files: Files) -> Manifest:
        from lorapipe.data import score as sc

        rows = _need(files, "generated", "score", f"run `lorapipe generate {cfg.source or 'CONFIG'}` first")
        return sc.run(cfg, p.judge(), rows, out, progress=p.progress("score"))

    def augment(out: Path, files: Files) -> Manifest:
        from lorapipe.data import augment as aug

        rows = _need(files, "scored", "augment", f"run `lorapipe score {cfg.source or 'CONFIG'}` first")
        return aug.run(cfg, p.teacher(), p.judge(), rows, out, progress=p.progress("augment"))

    def split(out: Path, files: Files) -> Manifest:
        from lorapipe.data import card
        from lorapipe.data import split as sp

        src = _need(files, "source", "split", f"run `lorapipe augment {cfg.source or 'CONFIG'}` first")
        m = sp.run(cfg, src, out)
        dirs = {name: d / name for name in ("generate", "score", "augment") if (d / name).is_dir()}
        dirs["split"] = out
        llms = {k: v for k, v in (("teacher", p.built("teacher")), ("judge", p.built("judge"))) if v is not None}
        card.run(cfg, dirs, d / "data_card", llms=llms)  # beside the stages: the run's data card
        return m

    # -- train and evaluate ---------------------------------------------------------------------
    def train_files() -> Files:
        train_file, eval_file = p.train_files()
        return {"train": train_file, "eval": eval_file}

    def train(out: Path, files: Files) -> Manifest:
        from lorapipe.train import distributed, trainer

        train_file = _need(files, "train", "train", "run `lorapipe split` first, or pass --train-file")
        eval_file = files.get("eval")
        eval_file = eval_file if eval_file is not None and eval_file.is_file() else None
        if cfg.distributed.launcher == "accelerate" and not distributed.in_launched_process():
            return p.train_launched(train_file, eval_file, out)
        resume = False if p.forced else p.options.get("resume", "auto")
        if p.train_in_child():
            from lorapipe.train import child

            return child.run(cfg, train_file, eval_file, out, resume=resume, bus=p.events)
        return trainer.run(cfg, train_file, eval_file, out, resume=resume,
                           callbacks=[p.train_callback()])

    def evaluate_files() -> Files:
        return {"adapter": d / "train" / "adapter", "eval": p.train_files()[1],
                "trainer_log": d / "train" / "trainer_log.json", "probe": d / "probe" / "probe.json",
                **{f"extra_set:{x.name}": cfg.resolve(x.file) for x in cfg.evaluate.extra_sets}}

    def evaluate(out: Path, files: Files) -> Manifest:
        return p.evaluate(out, files)

    eval_sections = ("task", "base_model", "evaluate", "inference", "score", "judge") + (
        ("teacher",) if cfg.evaluate.few_shot_arm else ())
    return [
        Stage("probe", (), probe_files,
              lambda f: Deps(("task", "base_model", "data", "probe", "inference", "score", "judge"), f,
                             {**checks, **j_code}, {**base, **j_models}),
              probe, enabled=cfg.probe.enabled and (inputs_file is not None or ready)),
        Stage("generate", (), lambda: {"inputs": inputs_file, "template": template},
              lambda f: Deps(("task", "teacher", "generate", "data"), f, t_code, t_models),
              generate, enabled=not ready),
        Stage("score", ("generate",), lambda: {"generated": d / "generate" / "generated.jsonl"},
              lambda f: Deps(("task", "score", "judge"), f, {**checks, **j_code}, j_models),
              score, enabled=not ready),
        Stage("augment", ("score",), lambda: {"scored": d / "score" / "scored.jsonl", "template": template},
              lambda f: Deps(("task", "teacher", "judge", "augment", "score", "generate"), f,
                             {**checks, **t_code, **j_code}, {**t_models, **j_models}),
              augment, enabled=not ready and cfg.augment.enabled),
        Stage("split", ("augment",) if cfg.augment.enabled else ("score",),
              lambda: {"source": p.split_source(), "eval_file": cfg.resolve(cfg.data.eval_file)},
              lambda f: Deps(("task", "split"), f), split, enabled=cfg.data.eval_file is None),
        Stage("train", ("split",), train_files,
              lambda f: Deps(("task", "base_model", "lora", "train"), f, {}, base), train),
        Stage("evaluate", ("train", "probe"), evaluate_files,
              lambda f: Deps(eval_sections, f, {**checks, **j_code}, {**base, **j_models}),
              evaluate),
    ]
