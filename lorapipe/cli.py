"""The `lorapipe` command line: parse, load the config, call the stage's ``run()``, print where
the artifacts are. Errors a user can fix are printed without a traceback (exit 2 for bad input)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lorapipe.errors import LorapipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From a task description and raw inputs to a deployed, versioned LoRA adapter.")
console = Console(stderr=True)
STATE = {"quiet": False, "json": False}

ConfigArg = Annotated[Path, typer.Argument(help="Path to pipeline.yaml.", show_default=False)]


@app.callback()
def _root(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the result.")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False) -> None:
    import logging

    from lorapipe.progress import set_quiet

    STATE["quiet"], STATE["json"] = quiet, as_json
    set_quiet(quiet or as_json)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        import os
        import warnings

        # Deprecation notices from the libraries are for lorapipe's developers, not its users.
        warnings.filterwarnings("ignore", category=FutureWarning)

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def emit(result: dict, human: str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json, else a human line."""
    if STATE["json"]:
        print(json.dumps(result, indent=2, default=str))
    elif human:
        print(human)


# ---- commands are added below, each importing its stage lazily so `--help` stays fast ----------

def _load(config: Path, overrides: list[str] | None = None):
    from lorapipe.config import load_config

    parsed = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            from lorapipe.errors import ConfigError

            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.num_train_epochs=1")
        import yaml

        parsed[key] = yaml.safe_load(value)
    return load_config(config, parsed)


SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: KEY=VALUE "
                                                     "(dotted path, YAML value), repeatable.")]


@app.command()
def train(config: ConfigArg,
          train_file: Annotated[Optional[Path], typer.Option(help="Rows to train on (default: the split's "
                                                              "train.jsonl or data.train_file).")] = None,
          eval_file: Annotated[Optional[Path], typer.Option(help="Rows to evaluate on.")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Output directory (default: RUN_DIR/train).")] = None,
          resume: Annotated[Optional[bool], typer.Option(
              "--resume/--no-resume", help="Continue from the newest checkpoint (default: when one exists "
              "for the same data and config).")] = None,
          launcher: Annotated[Optional[str], typer.Option(
              help="`accelerate`: start --num-processes training processes (DDP/FSDP/DeepSpeed per the "
                   "`distributed` section); `none`: this process only. Default: distributed.launcher.")] = None,
          num_processes: Annotated[Optional[int], typer.Option(
              help="Processes (GPUs) for --launcher accelerate. Default: distributed.num_processes.")] = None,
          overrides: SetOpt = None) -> None:
    """Train a LoRA adapter on ready rows (chat, alpaca or prompt/completion JSONL).

    With --launcher accelerate this command re-runs itself under `accelerate launch` on N processes
    (the same as `accelerate launch -m lorapipe train CONFIG`); the global batch stays the same.
    """
    from lorapipe.pipeline import Pipeline
    from lorapipe.train import distributed, trainer

    cfg = _load(config, overrides)
    if launcher not in (None, "none", "accelerate"):
        from lorapipe.errors import ConfigError

        raise ConfigError(f"--launcher: `{launcher}` is not a launcher; use `accelerate` or `none`")
    if (launcher or cfg.distributed.launcher) == "accelerate" and not distributed.in_launched_process():
        from lorapipe.progress import quiet

        def echo(msg: str) -> None:  # unwrapped, so the command line can be pasted
            if not quiet():
                print(msg, file=sys.stderr, flush=True)

        rc = distributed.launch(cfg, num_processes or cfg.distributed.num_processes,
                                distributed.relaunch_argv(sys.argv[1:]), echo=echo)
        raise typer.Exit(rc)
    if train_file is None:
        train_file, default_eval = Pipeline(cfg)._train_files()
        eval_file = eval_file or default_eval
    out = out or cfg.run_dir / "train"
    m = trainer.run(cfg, train_file, eval_file if eval_file and eval_file.is_file() else None, out,
                    resume="auto" if resume is None else resume)
    if distributed.rank() != 0:  # one result line per job, not one per process
        return
    emit({"adapter": str(out / "adapter"), "metrics": m.metrics},
         f"adapter: {out / 'adapter'}\n" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in m.metrics.items()))


@app.command()
def predict(config: ConfigArg,
            input: Annotated[Path, typer.Option("--input", "-i", help="Raw inputs (.jsonl/.csv/.txt) or chat rows.")],
            adapter: Annotated[Optional[Path], typer.Option(help="Adapter directory; omit for the base model.")] = None,
            output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSONL to write "
                                                           "(default: stdout).")] = None,
            max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 128,
            temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
            batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 8,
            overrides: SetOpt = None) -> None:
    """Answer each input with the base model or an adapter (batched); one JSON line per input."""
    import json as _json

    from lorapipe import generation, models
    from lorapipe.data.formats import read_inputs
    from lorapipe.manifest import write_jsonl
    from lorapipe.progress import bar

    cfg = _load(config, overrides)
    inputs = read_inputs(input, cfg.data.input_field)
    model, tok, _ = models.load(cfg.base_model)
    if adapter is not None:
        model = models.load_adapter(model, adapter)
    convs = [[{"role": "system", "content": cfg.task.system_prompt}, {"role": "user", "content": r["text"]}]
             for r in inputs]
    with bar("predict", len(convs)) as advance:
        gens = generation.generate(model, tok, convs, max_new_tokens=max_new_tokens, temperature=temperature,
                                   batch_size=batch_size, progress=advance)
    rows = [{"id": r["id"], "input": r["text"], "output": g.text} for r, g in zip(inputs, gens)]
    if output:
        write_jsonl(output, rows)
        emit({"output": str(output), "rows": len(rows)}, f"wrote {len(rows)} predictions to {output}")
    else:
        for r in rows:
            print(_json.dumps(r, ensure_ascii=False))


@app.command()
def run(config: ConfigArg,
        force: Annotated[Optional[str], typer.Option(help="Re-run from this stage on (probe, generate, score, "
                                                     "augment, split, train, evaluate).")] = None,
        push: Annotated[Optional[str], typer.Option(help="Register the run in the registry as NAME@vN (unless "
                                                    "the newest NAME holds the same adapter, data and config).")] = None,
        registry: Annotated[Optional[str], typer.Option(help="Registry URL (default $LORAPIPE_REGISTRY or "
                                                        "~/.local/share/lorapipe/registry).")] = None,
        overrides: SetOpt = None) -> None:
    """Run the whole pipeline: probe, generate, score, augment, split, train, evaluate.

    Stages whose config and inputs have not changed since their last run are skipped; an interrupted
    run continues where it stopped.
    """
    import time as _time

    from lorapipe import pipeline
    from lorapipe.progress import say

    cfg = _load(config, overrides)
    t0 = _time.perf_counter()
    say(f"[bold]lorapipe run[/] {config}  →  {cfg.run_dir}")
    result = pipeline.run(cfg, force=force)
    out = {"run_dir": str(result.run_dir), "adapter": str(result.adapter_dir), "ran": result.ran,
           "skipped": result.skipped, "seconds": round(_time.perf_counter() - t0, 1)}
    probe_m, eval_m = result.manifests.get("probe"), result.manifests.get("evaluate")
    if probe_m is not None:
        out["probe_verdict"] = probe_m.metrics.get("verdict")
    if eval_m is not None:
        out["ab"] = eval_m.metrics
    card = result.run_dir / "data_card" / "data_card.json"
    if card.is_file() and not STATE["json"]:
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
    emit(out, "\n".join(lines))


@app.command()
def rebuild(ref: Annotated[str, typer.Argument(help="Version to rebuild: NAME@vN, NAME@ALIAS or NAME.",
                                               show_default=False)],
            registry: Annotated[Optional[str], typer.Option(help="Registry URL (default $LORAPIPE_REGISTRY or "
                                                            "~/.local/share/lorapipe/registry).")] = None,
            out: Annotated[Optional[Path], typer.Option("--out", help="New directory for the rebuild (default: "
                                                        "rebuilds/NAME-vN).", show_default=False)] = None,
            atol: Annotated[float, typer.Option(help="Largest absolute difference allowed between the recorded "
                                                "and rebuilt adapter weights.")] = 1e-4,
            rtol: Annotated[float, typer.Option(help="Relative tolerance for recorded metrics.")] = 0.02,
            evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Also re-run the A/B "
                                                   "evaluation (slow on CPU).")] = True) -> None:
    """Re-run a registered version's pipeline from its recorded inputs, config and teacher answers into
    a new directory, and compare: data hashes, adapter weights (within --atol), metrics (--rtol).
    Exit code 1 when something differs."""
    from lorapipe.registry import Registry, default_url
    from lorapipe.registry.rebuild import rebuild as do_rebuild

    report = do_rebuild(Registry(registry or default_url()), ref, out, atol=atol, rtol=rtol, evaluate=evaluate)
    d = report.as_dict()
    w = report.weights
    same = sum(1 for x in report.data.values() if x["same"])
    lines = [f"rebuild of {report.ref}: {'REPRODUCED' if report.ok else 'DIFFERENT'}  ({report.out_dir}, "
             f"{report.seconds:.0f} s)",
             f"  data:    {same}/{len(report.data)} files identical (sha256)",
             f"  weights: max |diff| {w.get('max_abs_diff')} over {w.get('tensors')} tensors "
             f"({'bit-identical' if w.get('identical') else 'within' if report.weights_ok else 'over'} "
             f"atol {w.get('atol')})",
             f"  metrics: {sum(m['ok'] for m in report.metrics.values())}/{len(report.metrics)} within rtol {rtol}",
             f"  teacher/judge calls not served by the recorded cache: {sum(report.new_calls.values())}"]
    lines += [f"  differs: {x}" for x in report.differences()]
    emit(d, "\n".join(lines))
    if not report.ok:
        raise typer.Exit(1)


# ---- registry: a sub-app (ls, show, push, pull, promote, rollback, history, diff, verify) --------
from lorapipe.registry.cli import app as _registry_app  # noqa: E402  (light: no torch/fsspec import)

app.add_typer(_registry_app, name="registry")


# ---- probe and eval ----------------------------------------------------------------------------
@app.command()
def probe(config: ConfigArg,
          inputs: Annotated[Optional[Path], typer.Option(help="Raw inputs (.jsonl/.csv/.txt); default: "
                                                         "data.inputs, else the user turns of data.train_file.")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Output directory (default: RUN_DIR/probe).")] = None,
          overrides: SetOpt = None) -> None:
    """Prompt or fine-tune? Try the base model with the task prompt on sample inputs and measure it.

    Answers probe.n_inputs inputs probe.samples times each, scores every answer on the task's rubric
    and says `prompt` (prompting is enough) or `fine-tune`. Writes probe.json and probe.md.
    """
    from lorapipe import probe as probe_mod
    from lorapipe.data.formats import read_inputs
    from lorapipe.pipeline import Pipeline
    from lorapipe.progress import bar

    cfg = _load(config, overrides)
    pipe = Pipeline(cfg)
    if inputs is not None:
        items = read_inputs(inputs, cfg.data.input_field)
    elif cfg.data.inputs is not None:
        items = pipe.raw_inputs()
    elif cfg.data.train_file is not None:
        items = pipe._inputs_from_rows()
    else:
        from lorapipe.errors import ConfigError

        raise ConfigError(f"{config}: the probe needs sample inputs; pass --inputs FILE or set data.inputs")
    out = out or cfg.run_dir / "probe"
    model, tok, _ = pipe.base()
    judge = pipe.judge()
    with bar("probe", min(cfg.probe.n_inputs, len(items)) * cfg.probe.samples) as advance:
        m = probe_mod.run(cfg, model, tok, items, out, judge=judge, progress=advance)
    result = json.loads((out / "probe.json").read_text())
    emit({"out": str(out), "metrics": m.metrics, "why": result["why"]},
         probe_mod.summary(result) + f"\nreport: {out / 'probe.md'}")


def _trainer_log(adapter: Path) -> list[dict] | None:
    """The trainer's log history next to an adapter: trainer_log.json, else a trainer_state.json."""
    for p in (adapter.parent / "trainer_log.json", adapter / "trainer_log.json"):
        if p.is_file():
            return json.loads(p.read_text())
    for p in (adapter / "trainer_state.json", adapter.parent / "trainer_state.json"):
        if p.is_file():
            return json.loads(p.read_text()).get("log_history")
    return None


@app.command("eval")
def eval_(config: ConfigArg,
          adapter: Annotated[Path, typer.Option(help="Adapter directory written by `lorapipe train` "
                                                "(e.g. runs/<task>/train/adapter).", show_default=False)],
          eval_file: Annotated[Optional[Path], typer.Option(help="Held-out chat rows (default: data.eval_file, "
                                                            "else RUN_DIR/split/eval.jsonl).")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Output directory (default: RUN_DIR/evaluate).")] = None,
          max_inputs: Annotated[Optional[int], typer.Option(min=1, help="Evaluate at most N rows "
                                                            "(overrides evaluate.max_inputs).")] = None,
          overrides: SetOpt = None) -> None:
    """A/B: the base model vs the tuned adapter on held-out inputs, scored on the same rubric.

    Writes ab.json, summary.md and report.html (verdict, win rate with its 95% interval, loss curves,
    score histograms, per-criterion bars, answers side by side).
    """
    from lorapipe import models
    from lorapipe.data.formats import read_rows
    from lorapipe.errors import DataError
    from lorapipe.evaluate import ab
    from lorapipe.pipeline import Pipeline
    from lorapipe.progress import bar

    cfg = _load(config, overrides)
    if max_inputs is not None:
        cfg.evaluate.max_inputs = max_inputs
    rows_file = eval_file or cfg.resolve(cfg.data.eval_file) or cfg.run_dir / "split" / "eval.jsonl"
    if not rows_file.is_file():
        raise DataError(f"{rows_file}: eval rows not found; pass --eval-file FILE, set data.eval_file, or run "
                        f"`lorapipe run {config}` first (its split stage writes split/eval.jsonl)")
    rows = read_rows(rows_file, system_prompt=cfg.task.system_prompt)
    if cfg.evaluate.max_inputs:
        rows = rows[:cfg.evaluate.max_inputs]
    pipe = Pipeline(cfg)
    base, tok, _ = pipe.base()
    judge = pipe.judge()
    model = models.load_adapter(base, adapter)
    out = out or cfg.run_dir / "evaluate"
    probe_file = cfg.run_dir / "probe" / "probe.json"
    arms = 3 if cfg.evaluate.few_shot_arm else 2
    extra = ab.read_extra_sets(cfg)
    with bar("A/B base vs tuned", (len(rows) + sum(map(len, extra.values()))) * arms) as advance:
        m = ab.run(cfg, model, tok, rows, out, judge=judge, progress=advance, trainer_log=_trainer_log(adapter),
                   probe=json.loads(probe_file.read_text()) if probe_file.is_file() else None, extra_sets=extra)
    result = json.loads((out / "ab.json").read_text())
    emit({"out": str(out), "report": str(out / "report.html"), "metrics": m.metrics,
          "verdict": result["verdict"]["line"]},
         ab.summary_text(result) + f"\nreport: {out / 'report.html'}")



# ---- data stages: generate, score ---------------------------------------------------------------
def _phase_bars():
    """A context manager yielding a ``progress(description, total) -> advance`` factory: one bar per
    phase of a data stage, each closed when the next opens (rich allows one live display at a time)."""
    import contextlib

    from lorapipe.progress import bar

    @contextlib.contextmanager
    def phases():
        current = [contextlib.ExitStack()]

        def factory(description: str, total: int):
            current[0].close()
            current[0] = contextlib.ExitStack()
            return current[0].enter_context(bar(description, total))

        try:
            yield factory
        finally:
            current[0].close()

    return phases()


def _make_llm(cfg, llm_cfg):
    from lorapipe.llm import make_llm

    # A python teacher/judge module may sit next to pipeline.yaml.
    kw = {"search_path": cfg.base_dir} if llm_cfg.kind == "python" else {}
    return make_llm(llm_cfg, cache_dir=cfg.run_dir / "cache", **kw)


def _data_summary(cfg, stages: tuple[str, ...]) -> str:
    from lorapipe.data import card

    return card.summary(card.build_card(cfg, {s: cfg.run_dir / s for s in stages}))


@app.command()
def generate(config: ConfigArg, overrides: SetOpt = None) -> None:
    """Have the teacher write the output for every input: RUN_DIR/generate/generated.jsonl.

    Inputs come from data.inputs and/or are written by the teacher (generate.n_inputs). Resumable:
    after a crash or Ctrl-C run the same command again; only the missing answers are requested.
    Requests that failed for good are listed in failed.jsonl and retried by the next run.
    """
    from lorapipe.data import generate as gen
    from lorapipe.errors import ConfigError

    cfg = _load(config, overrides)
    if cfg.teacher is None:
        raise ConfigError(f"{config}: `lorapipe generate` needs a `teacher` section (kind: openai, local or "
                          "python); with data.train_file the rows are ready, so go on with `lorapipe train`")
    out = cfg.run_dir / "generate"
    teacher = _make_llm(cfg, cfg.teacher)
    with _phase_bars() as progress:
        m = gen.run(cfg, teacher, out, progress=progress)
    failed = f"\nfailed:    {out / 'failed.jsonl'} (rerun to retry)" if m.metrics.get("failed") else ""
    emit({"out_dir": str(out), "generated": str(out / "generated.jsonl"), "metrics": m.metrics,
          "teacher_usage": m.extra.get("teacher_usage")},
         f"{_data_summary(cfg, ('generate',))}\ngenerated: {out / 'generated.jsonl'}{failed}")


@app.command()
def score(config: ConfigArg, overrides: SetOpt = None) -> None:
    """Score the generated rows with the rule checks and the judge; keep those >= score.threshold.

    Reads RUN_DIR/generate/generated.jsonl; writes RUN_DIR/score/scored.jsonl (kept) and
    rejected.jsonl (every dropped row with its reasons). Without a `judge` section only the rule
    checks score.
    """
    from lorapipe.data import score as sc
    from lorapipe.errors import DataError

    cfg = _load(config, overrides)
    in_file = cfg.run_dir / "generate" / "generated.jsonl"
    if not in_file.is_file():
        raise DataError(f"{in_file}: not found; run `lorapipe generate {config}` first")
    out = cfg.run_dir / "score"
    judge = _make_llm(cfg, cfg.judge) if cfg.judge is not None else None
    with _phase_bars() as progress:
        m = sc.run(cfg, judge, in_file, out, progress=progress)
    emit({"out_dir": str(out), "scored": str(out / "scored.jsonl"), "rejected": str(out / "rejected.jsonl"),
          "metrics": m.metrics, "judge_usage": m.extra.get("judge_usage")},
         f"{_data_summary(cfg, ('generate', 'score'))}\nscored:   {out / 'scored.jsonl'}\n"
         f"rejected: {out / 'rejected.jsonl'}")


@app.command()
def export(config: Annotated[Optional[Path], typer.Argument(
               help="pipeline.yaml; supplies the default --adapter (RUN/train/adapter) and --out.",
               show_default=False)] = None,
           adapter: Annotated[Optional[Path], typer.Option("--adapter", help="PEFT adapter directory.",
                                                           show_default=False)] = None,
           out: Annotated[Optional[Path], typer.Option("--out", help="Directory to write (replaced atomically).",
                                                       show_default=False)] = None,
           merge: Annotated[bool, typer.Option("--merge/--adapter-only",
                                               help="Merged model (parity-checked) or plain PEFT adapter.")] = True,
           base: Annotated[Optional[str], typer.Option("--base", help="Base model spec; default: the one the "
                                                       "adapter's manifest records.", show_default=False)] = None,
           allow_pickle: Annotated[bool, typer.Option("--allow-pickle",
                                                      help="Accept .bin (pickle) weights you trust.")] = False,
           tolerance: Annotated[float, typer.Option("--tolerance", help="Largest merged-vs-unmerged logit "
                                                    "difference accepted.")] = 1e-4) -> None:
    """Export an adapter: merged into its base as a standard safetensors model (checked against the
    unmerged adapter's logits), or adapter-only in PEFT format for `PeftModel.from_pretrained` and vLLM."""
    from lorapipe import export as ex

    if config is not None:
        cfg = _load(config)
        adapter = adapter or cfg.run_dir / "train" / "adapter"
        out = out or cfg.run_dir / "export" / ("merged" if merge else "adapter")
    if adapter is None or out is None:
        from lorapipe.errors import ConfigError

        raise ConfigError("export needs --adapter DIR and --out DIR (or a pipeline.yaml to take them from)")
    m = ex.run(adapter, out, mode="merge" if merge else "adapter", base=base, allow_pickle=allow_pickle,
               tolerance=tolerance)
    diff = m.metrics.get("parity_max_abs_diff")
    human = f"exported ({'merged' if merge else 'adapter only'}): {out}"
    if diff is not None:
        human += f"\nparity: max |logit difference| {diff:.3g} (tolerance {tolerance:.3g})"
    for problem in m.extra.get("vllm_problems") or []:
        human += f"\nvLLM will not load it: {problem}"
    emit({"out_dir": str(out), "mode": m.extra.get("mode"), "metrics": m.metrics,
          "vllm_problems": m.extra.get("vllm_problems")}, human)


@app.command()
def serve(config: Annotated[Optional[Path], typer.Option("--config", help="pipeline.yaml: base_model and the "
                                                         "serve section.", show_default=False)] = None,
          base: Annotated[Optional[str], typer.Option("--base", help="Base model spec (default: config's "
                                                      "base_model, else smollm2-135m-instruct).",
                                                      show_default=False)] = None,
          adapters: Annotated[Optional[Path], typer.Option("--adapters", help="Directory of adapters: each "
                                                           "subfolder is one adapter, named after the folder.",
                                                           show_default=False)] = None,
          registry: Annotated[Optional[str], typer.Option("--registry", help="Also serve a registry's adapters "
                                                          "(a path or fsspec URL): `name` (its prod alias, else "
                                                          "the newest), `name@v3`, `name@prod`; moving an alias "
                                                          "hot-swaps.", show_default=False)] = None,
          host: Annotated[Optional[str], typer.Option("--host", help="Interface (default: serve.host, "
                                                      "127.0.0.1).", show_default=False)] = None,
          port: Annotated[Optional[int], typer.Option("--port", help="Port (default: serve.port, 8000).",
                                                      show_default=False)] = None,
          keys: Annotated[Optional[Path], typer.Option("--keys", help="YAML/JSON API keys file (tenants and "
                                                       "their adapters); without it the server is open.",
                                                       show_default=False)] = None,
          max_adapters: Annotated[Optional[int], typer.Option("--max-adapters", min=1, help="Adapters kept "
                                                              "loaded (LRU) (default: serve.max_loaded_adapters).",
                                                              show_default=False)] = None,
          allow_unverified: Annotated[bool, typer.Option("--allow-unverified", help="Serve adapters that have "
                                                         "no manifest.json to check their hashes against.")] = False,
          allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Serve .bin (pickle) adapters "
                                                     "you trust.")] = False,
          watch: Annotated[float, typer.Option("--watch", help="Seconds between scans of --adapters for new, "
                                               "changed or removed adapters (0: off).")] = 1.0,
          lora_kernel: Annotated[str, typer.Option("--lora-kernel", help="Builtin engine: `stacked` (fast per-row "
                                                   "LoRA on linear layers) or `peft` (PEFT's mixed batches: also "
                                                   "embedding LoRA, modules_to_save...).")] = "stacked",
          engine: Annotated[str, typer.Option("--engine", help="`builtin` (this process) or `vllm` (vLLM's "
                                              "server behind a lorapipe proxy that keeps keys and hot-swap; "
                                              "CUDA, pip install vllm).")] = "builtin",
          dry_run: Annotated[bool, typer.Option("--dry-run", help="With --engine vllm: print the vLLM command "
                                                "line and exit.")] = False,
          vllm_port: Annotated[Optional[int], typer.Option("--vllm-port", help="vLLM's own loopback port "
                                                           "(default: --port + 1).", show_default=False)] = None,
          vllm_args: Annotated[Optional[list[str]], typer.Option("--vllm-arg", help="Extra argument for `vllm "
                                                                 "serve`, repeatable, e.g. --vllm-arg=--dtype "
                                                                 "--vllm-arg=bfloat16.")] = None) -> None:
    """Serve the base model and every adapter in --adapters over an OpenAI-compatible API
    (/v1/chat/completions, /v1/completions, /v1/models), with hot-swap (/admin/adapters, the
    directory watch, registry aliases), API keys per tenant, /health and /metrics."""
    from lorapipe.config import ServeConfig
    from lorapipe.serve import server

    cfg = _load(config) if config is not None else None
    sc = cfg.serve if cfg is not None else ServeConfig()
    spec = base or (cfg.base_model if cfg is not None else server.DEFAULT_BASE)
    if engine not in ("builtin", "vllm"):
        from lorapipe.errors import ConfigError

        raise ConfigError(f"--engine: `{engine}` is not an engine; use `builtin` or `vllm`")
    if adapters is None and registry is None:
        from lorapipe.errors import ConfigError

        raise ConfigError("serve: nothing to serve adapters from; pass --adapters DIR (a folder of adapter "
                          "folders) and/or --registry URL")
    if engine == "vllm":
        from lorapipe.serve import vllm

        if registry is not None or adapters is None:
            from lorapipe.errors import ConfigError

            raise ConfigError("--engine vllm serves an --adapters DIR; for a registry, `lorapipe registry pull` "
                              "the versions into one first")

        vllm.run(base=spec, adapters=adapters, host=host or sc.host, port=port or sc.port, keys=keys,
                 max_adapters=max_adapters or sc.max_loaded_adapters, vllm_port=vllm_port,
                 rank_floor=cfg.lora.r if cfg is not None else None, allow_unverified=allow_unverified,
                 allow_pickle=allow_pickle, extra_args=vllm_args or [], dry_run=dry_run,
                 warn=lambda msg: console.print(f"[yellow]{msg}[/]", markup=True, highlight=False))
        return
    if dry_run:
        from lorapipe.errors import ConfigError

        raise ConfigError("--dry-run prints the vLLM command line: use it with --engine vllm")
    server.run(base=spec, adapters=adapters, registry=registry, host=host or sc.host, port=port or sc.port, keys=keys,
               max_adapters=max_adapters or sc.max_loaded_adapters, batch_window_ms=sc.batch_window_ms,
               max_batch_size=sc.max_batch_size, allow_unverified=allow_unverified, allow_pickle=allow_pickle,
               watch_interval_s=watch or None, lora_kernel=lora_kernel,
               warn=lambda msg: console.print(f"[yellow]{msg}[/]", markup=True, highlight=False))


def main() -> None:
    try:
        app()
    except LorapipeError as e:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
