"""``lorapipe train`` and ``lorapipe eval``: the train and evaluate stages, optionally on other files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lorapipe.cli.common import ConfigArg, SetOpt, emit, engine, fmt_metrics, load
from lorapipe.cli.registry import AllowPickleOpt, AllowUnverifiedOpt
from lorapipe.errors import ConfigError

app = typer.Typer()


@app.command()
def train(ctx: typer.Context, config: ConfigArg,
          train_file: Annotated[Path | None, typer.Option(help="Rows to train on (default: the split's train.jsonl "
                                                        "or data.train_file, made first if out of date).")] = None,
          eval_file: Annotated[Path | None, typer.Option(help="Rows to evaluate on.")] = None,
          out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN_DIR/train).")] = None,
          resume: Annotated[bool | None, typer.Option(
              "--resume/--no-resume", help="Continue from the newest checkpoint (default: when one exists "
              "for the same data and config); --no-resume trains from scratch.")] = None,
          launcher: Annotated[str | None, typer.Option(
              help="`accelerate`: start --num-processes training processes (DDP/FSDP/DeepSpeed per the "
                   "`distributed` section); `none`: this process only. Default: distributed.launcher.")] = None,
          num_processes: Annotated[int | None, typer.Option(
              help="Processes (GPUs) for --launcher accelerate. Default: distributed.num_processes.")] = None,
          overrides: SetOpt = None) -> None:
    """Train a LoRA adapter on ready rows (chat, alpaca or prompt/completion JSONL).

    With --launcher accelerate this command re-runs itself under `accelerate launch` on N processes
    (the same as `accelerate launch -m lorapipe train CONFIG`); the global batch stays the same.
    """
    from lorapipe.train import distributed, trainer

    cfg = load(config, overrides)
    if launcher not in (None, "none", "accelerate"):
        raise ConfigError(f"--launcher: `{launcher}` is not a launcher; use `accelerate` or `none`")
    if distributed.in_launched_process():
        # One rank of `accelerate launch`: the engine in the launching process records the result.
        if train_file is None:
            raise ConfigError("a launched training rank needs --train-file (the launcher passes it)")
        m = trainer.run(cfg, train_file, eval_file if eval_file and eval_file.is_file() else None,
                        out or cfg.run_dir / "train", resume="auto" if resume is None else resume)
        if distributed.rank() != 0:  # one result line per job, not one per process
            return
    elif (launcher or cfg.distributed.launcher) == "accelerate":
        from lorapipe.progress import quiet

        def echo(msg: str) -> None:  # unwrapped, so the command line can be pasted
            if not quiet():
                print(msg, file=sys.stderr, flush=True)

        rc = distributed.launch(cfg, num_processes or cfg.distributed.num_processes,
                                distributed.relaunch_argv(sys.argv[1:]), echo=echo)
        raise typer.Exit(rc)
    else:
        pipe = engine(ctx, cfg, resume="auto" if resume is None else resume)
        if train_file is not None:
            files = {"train": train_file, "eval": eval_file}
            m = pipe.run_stage("train", files=files, out=out, force=resume is False)
        else:
            if eval_file is not None:
                raise ConfigError("--eval-file goes with --train-file; without them the split's files are used")
            result = pipe.run(until="train", force="train" if resume is False else None,
                              outs={"train": out} if out is not None else None)
            m = result.manifests["train"]
    out = out or cfg.run_dir / "train"
    emit(ctx, {"adapter": str(out / "adapter"), "metrics": m.metrics},
         f"adapter: {out / 'adapter'}\n" + fmt_metrics(m.metrics))


@app.command("eval")
def eval_(ctx: typer.Context, config: ConfigArg,
          adapter: Annotated[Path, typer.Option(help="Adapter directory written by `lorapipe train` "
                                                "(e.g. runs/<task>/train/adapter).", show_default=False)],
          eval_file: Annotated[Path | None, typer.Option(help="Held-out chat rows (default: data.eval_file, "
                                                       "else RUN_DIR/split/eval.jsonl).")] = None,
          out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN_DIR/evaluate).")] = None,
          max_inputs: Annotated[int | None, typer.Option(min=1, help="Evaluate at most N rows "
                                                       "(overrides evaluate.max_inputs).")] = None,
          allow_pickle: AllowPickleOpt = False, allow_unverified: AllowUnverifiedOpt = False,
          overrides: SetOpt = None) -> None:
    """A/B: the base model vs the tuned adapter on held-out inputs, scored on the same rubric.

    Writes ab.json, summary.md and report.html (verdict, win rate with its 95% interval, loss curves,
    score histograms, per-criterion bars, answers side by side).
    """
    cfg = load(config, overrides)
    if max_inputs is not None:
        cfg.evaluate.max_inputs = max_inputs
    files: dict[str, Path | None] = {"adapter": adapter, "trainer_log": adapter.parent / "trainer_log.json"}
    if eval_file is not None:
        files["eval"] = eval_file
    out = out or cfg.run_dir / "evaluate"
    from lorapipe.evaluate import ab

    m = engine(ctx, cfg, messages=False, allow_pickle=allow_pickle,
               allow_unverified=allow_unverified).run_stage("evaluate", files=files, out=out)
    result = json.loads((out / "ab.json").read_text())
    emit(ctx, {"out": str(out), "report": str(out / "report.html"), "metrics": m.metrics,
               "verdict": result["verdict"]["line"]}, ab.summary_text(result) + f"\nreport: {out / 'report.html'}")
