"""The pipeline's verbs: ``run`` and one command per stage. Each parses, asks the engine
(:class:`lorapipe.pipeline.Pipeline`) to run, and prints; no stage body lives here.

``lorapipe STAGE CONFIG`` runs that stage and, first, whatever it reads from that is out of date
(``lorapipe score`` after an edit to the teacher re-generates first), skipping what is up to date.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from lorapipe.cli.common import ConfigArg, RegistryUrlOpt, SetOpt, emit, engine, fmt_metrics, load, state
from lorapipe.errors import ConfigError

app = typer.Typer()


@app.command()
def run(ctx: typer.Context, config: ConfigArg,
        force: Annotated[str | None, typer.Option(help="Redo this stage from scratch and re-run every stage after "
                                                "it (probe, generate, score, augment, split, train, "
                                                "evaluate).")] = None,
        push: Annotated[str | None, typer.Option(help="Register the run in the registry as NAME@vN (unless the "
                                               "newest NAME holds the same adapter, data and config).")] = None,
        registry: RegistryUrlOpt = None, overrides: SetOpt = None) -> None:
    """Run the whole pipeline: probe, generate, score, augment, split, train, evaluate.

    Stages whose config, inputs, code and models have not changed since their last run are skipped;
    an interrupted run continues where it stopped. Progress and results also go to RUN_DIR/events.jsonl.
    """
    from lorapipe.progress import say

    cfg = load(config, overrides)
    t0 = time.perf_counter()
    say(f"[bold]lorapipe run[/] {config}  →  {cfg.run_dir}")
    result = engine(ctx, cfg).run(force=force)
    out = {"run_dir": str(result.run_dir), "adapter": str(result.adapter_dir), "ran": result.ran,
           "skipped": result.skipped, "failed": result.failed, "seconds": round(time.perf_counter() - t0, 1),
           "events": str(result.run_dir / "events.jsonl")}
    probe_m, eval_m = result.manifests.get("probe"), result.manifests.get("evaluate")
    if probe_m is not None:
        out["probe_verdict"] = probe_m.metrics.get("verdict")
    if eval_m is not None:
        out["ab"] = eval_m.metrics
    card = result.run_dir / "data_card" / "data_card.json"
    if card.is_file() and not state(ctx).json:
        from lorapipe.data.card import summary as card_summary

        say(card_summary(json.loads(card.read_text())))
    report = result.run_dir / "evaluate" / "report.html"
    if report.is_file():
        out["report"] = str(report)
    if push:
        from lorapipe.registry import Registry, default_url

        # dedup: a rerun that changed nothing registers nothing new
        out["registered"] = Registry(registry or default_url()).push(push, result.run_dir, dedup=True)
    lines = [f"adapter: {out['adapter']}"] + ([f"report:  {out['report']}"] if "report" in out else []) + (
        [f"registered: {out['registered']}"] if "registered" in out else []) + [
        f"stages run: {', '.join(result.ran) or 'none'}; skipped: {', '.join(result.skipped) or 'none'}; "
        f"total {out['seconds']:.0f} s"]
    lines += [f"failed: {n} request(s) in {s} (see {result.run_dir / s / 'failed.jsonl'}); run the same command "
              "again to retry only those" for s, n in result.failed.items()]
    emit(ctx, out, "\n".join(lines))


@app.command()
def probe(ctx: typer.Context, config: ConfigArg,
          inputs: Annotated[Path | None, typer.Option(help="Raw inputs (.jsonl/.csv/.txt); default: data.inputs, "
                                                    "else the user turns of data.train_file.")] = None,
          out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN_DIR/probe).")] = None,
          overrides: SetOpt = None) -> None:
    """Prompt or fine-tune? Try the base model with the task prompt on sample inputs and measure it.

    Answers probe.n_inputs inputs probe.samples times each, scores every answer on the task's rubric
    and says `prompt` (prompting is enough) or `fine-tune`. Writes probe.json and probe.md.
    """
    cfg = load(config, overrides)
    if inputs is None and cfg.data.inputs is None and cfg.data.train_file is None:
        raise ConfigError(f"{config}: the probe needs sample inputs; pass --inputs FILE or set data.inputs")
    out = out or cfg.run_dir / "probe"
    from lorapipe import probe as probe_mod

    m = engine(ctx, cfg, messages=False).run_stage("probe", files={"inputs": inputs} if inputs is not None else None,
                                                   out=out)
    result = json.loads((out / "probe.json").read_text())
    emit(ctx, {"out": str(out), "metrics": m.metrics, "why": result["why"]},
         probe_mod.summary(result) + f"\nreport: {out / 'probe.md'}")


def _data_summary(cfg, stages: tuple[str, ...]) -> str:
    from lorapipe.data import card

    return card.summary(card.build_card(cfg, {s: cfg.run_dir / s for s in stages}))


def _stage_until(ctx: typer.Context, config: Path, overrides: list[str] | None, stage: str):
    cfg = load(config, overrides)
    if cfg.data.train_file is not None and stage in ("generate", "score", "augment"):
        raise ConfigError(f"{config}: with data.train_file the rows are ready; `lorapipe {stage}` has nothing to "
                          "do, go on with `lorapipe train`")
    if stage in ("generate", "augment") and cfg.teacher is None:
        raise ConfigError(f"{config}: `lorapipe {stage}` needs a `teacher` section (kind: openai, local or python)")
    if stage == "augment" and not cfg.augment.enabled:
        raise ConfigError(f"{config}: augment.enabled is false; set it to true to augment")
    result = engine(ctx, cfg).run(until=stage)
    return cfg, result.manifests[stage]


@app.command()
def generate(ctx: typer.Context, config: ConfigArg, overrides: SetOpt = None) -> None:
    """Have the teacher write the output for every input: RUN_DIR/generate/generated.jsonl.

    Inputs come from data.inputs and/or are written by the teacher (generate.n_inputs). Resumable:
    after a crash or Ctrl-C run the same command again; only the missing answers are requested.
    Requests that failed for good are listed in failed.jsonl and retried by the next run.
    """
    cfg, m = _stage_until(ctx, config, overrides, "generate")
    out = cfg.run_dir / "generate"
    failed = f"\nfailed:    {out / 'failed.jsonl'} (rerun to retry)" if m.metrics.get("failed") else ""
    emit(ctx, {"out_dir": str(out), "generated": str(out / "generated.jsonl"), "metrics": m.metrics,
               "teacher_usage": m.extra.get("teacher_usage")},
         f"{_data_summary(cfg, ('generate',))}\ngenerated: {out / 'generated.jsonl'}{failed}")


@app.command()
def score(ctx: typer.Context, config: ConfigArg, overrides: SetOpt = None) -> None:
    """Score the generated rows with the rule checks and the judge; keep those >= score.threshold.

    Writes RUN_DIR/score/scored.jsonl (kept) and rejected.jsonl (every dropped row with its reasons),
    generating first if that is out of date. Without a `judge` section only the rule checks score.
    """
    cfg, m = _stage_until(ctx, config, overrides, "score")
    out = cfg.run_dir / "score"
    emit(ctx, {"out_dir": str(out), "scored": str(out / "scored.jsonl"), "rejected": str(out / "rejected.jsonl"),
               "metrics": m.metrics, "judge_usage": m.extra.get("judge_usage")},
         f"{_data_summary(cfg, ('generate', 'score'))}\nscored:   {out / 'scored.jsonl'}\n"
         f"rejected: {out / 'rejected.jsonl'}")


@app.command()
def augment(ctx: typer.Context, config: ConfigArg, overrides: SetOpt = None) -> None:
    """Paraphrases and edge cases (short, ambiguous, adversarial) of the kept rows, scored again:
    RUN_DIR/augment/augmented.jsonl (earlier stages first, if out of date)."""
    cfg, m = _stage_until(ctx, config, overrides, "augment")
    out = cfg.run_dir / "augment"
    emit(ctx, {"out_dir": str(out), "augmented": str(out / "augmented.jsonl"), "metrics": m.metrics},
         f"augmented: {out / 'augmented.jsonl'}  ({fmt_metrics(m.metrics)})")


@app.command()
def split(ctx: typer.Context, config: ConfigArg, overrides: SetOpt = None) -> None:
    """Deduplicate and split the rows 90/10 (paraphrases stay with their source):
    RUN_DIR/split/train.jsonl and eval.jsonl, plus the data card (earlier stages first, if out of date)."""
    cfg, m = _stage_until(ctx, config, overrides, "split")
    out = cfg.run_dir / "split"
    emit(ctx, {"out_dir": str(out), "train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"),
               "metrics": m.metrics}, f"train: {out / 'train.jsonl'}\neval:  {out / 'eval.jsonl'}  "
                                      f"({fmt_metrics(m.metrics)})")
