"""Commands around a trained adapter: ``predict``, ``export``, ``rebuild``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from lorapipe.cli.common import ConfigArg, RegistryUrlOpt, SetOpt, emit, load
from lorapipe.cli.registry import AllowPickleOpt, AllowUnverifiedOpt

app = typer.Typer()


@app.command()
def predict(ctx: typer.Context, config: ConfigArg,
            input: Annotated[Path, typer.Option("--input", "-i", help="Raw inputs (.jsonl/.csv/.txt) or chat rows.")],
            adapter: Annotated[Path | None, typer.Option(help="Adapter directory; omit for the base model.")] = None,
            output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL to write "
                                                           "(default: stdout).")] = None,
            max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 128,
            temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
            batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 8,
            allow_pickle: AllowPickleOpt = False, allow_unverified: AllowUnverifiedOpt = False,
            overrides: SetOpt = None) -> None:
    """Answer each input with the base model or an adapter (batched); one JSON line per input."""
    import json as _json

    from lorapipe import generation, models
    from lorapipe.data.formats import read_inputs
    from lorapipe.manifest import write_jsonl
    from lorapipe.progress import bar

    cfg = load(config, overrides)
    inputs = read_inputs(input, cfg.data.input_field, cfg.data.max_line_bytes)
    model, tok, info = models.load(cfg.base_model)
    if adapter is not None:
        model = models.load_adapter(model, adapter, base=info, allow_pickle=allow_pickle,
                                    allow_unverified=allow_unverified)
    convs = [[{"role": "system", "content": cfg.task.system_prompt}, {"role": "user", "content": r["text"]}]
             for r in inputs]
    with bar("predict", len(convs)) as advance:
        gens = generation.generate(model, tok, convs, max_new_tokens=max_new_tokens, temperature=temperature,
                                   batch_size=batch_size, progress=advance, fast=cfg.inference.fast,
                                   weights=cfg.inference.weights, copy_from=generation.copy_sources(cfg, convs))
    rows = [{"id": r["id"], "input": r["text"], "output": g.text} for r, g in zip(inputs, gens)]
    if output:
        write_jsonl(output, rows)
        emit(ctx, {"output": str(output), "rows": len(rows)}, f"wrote {len(rows)} predictions to {output}")
    else:
        for r in rows:
            print(_json.dumps(r, ensure_ascii=False))


@app.command()
def export(ctx: typer.Context, source: Annotated[Path | None, typer.Argument(
               help="pipeline.yaml (supplies the default --adapter RUN/train/adapter and --out), the adapter "
                    "directory itself, or a run directory (its train/adapter).", show_default=False,
               metavar="CONFIG|ADAPTER")] = None,
           adapter: Annotated[Path | None, typer.Option("--adapter", help="PEFT adapter directory.",
                                                           show_default=False)] = None,
           out: Annotated[Path | None, typer.Option("--out", help="Directory to write: new, empty or an earlier "
                                                       "export of the same kind (replaced atomically).",
                                                       show_default=False)] = None,
           fmt: Annotated[str, typer.Option("--format", help="`hf`: safetensors (merged or PEFT, see --merge); "
                                            "`gguf`: a llama.cpp LoRA GGUF plus an Ollama Modelfile.")] = "hf",
           merge: Annotated[bool | None, typer.Option("--merge/--adapter-only", help="With --format hf: merged "
                                                      "model (parity-checked, the default) or plain PEFT adapter.",
                                                      show_default=False)] = None,
           base: Annotated[str | None, typer.Option("--base", help="Base model spec; default: the one the "
                                                       "adapter's manifest records.", show_default=False)] = None,
           gguf_dtype: Annotated[str, typer.Option("--gguf-dtype", help="With --format gguf: f32 (exact) or "
                                                   "f16 (half the size).")] = "f32",
           gguf_base: Annotated[str, typer.Option("--gguf-base", help="With --format gguf and a GGUF base: `f16`/"
                                                  "`f32` write the base's weights unquantised beside the adapter "
                                                  "and the Modelfile uses that file (the weights lorapipe trained "
                                                  "on: llama.cpp answers as lorapipe does); `as-is` uses the base "
                                                  "file itself; `auto`: f16 for a quantised base, else as-is.")
                        ] = "auto",
           allow_pickle: Annotated[bool, typer.Option("--allow-pickle",
                                                      help="Accept .bin (pickle) weights you trust.")] = False,
           allow_unverified: Annotated[bool, typer.Option("--allow-unverified", help="Accept an adapter without "
                                                          "a manifest.json to check its files against.")] = False,
           force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds something else "
                                               "than an earlier export of the same kind.")] = False,
           tolerance: Annotated[float, typer.Option("--tolerance", help="Largest merged-vs-unmerged logit "
                                                    "difference accepted.")] = 1e-4) -> None:
    """Export an adapter: merged into its base as a standard safetensors model (checked against the
    unmerged adapter's logits), adapter-only in PEFT format for `PeftModel.from_pretrained` and vLLM, or
    (--format gguf) as a llama.cpp LoRA adapter with an Ollama Modelfile: `ollama create NAME -f OUT/Modelfile`."""
    from lorapipe import export as ex
    from lorapipe.adapter_files import CONFIG_FILE
    from lorapipe.errors import ConfigError

    if fmt not in ("hf", "gguf"):
        raise ConfigError(f"--format must be `hf` or `gguf`, got {fmt!r}")
    if fmt == "gguf" and merge:
        raise ConfigError("--merge writes a safetensors model; --format gguf writes the adapter for llama.cpp "
                          "(applied on the base GGUF at run time). Drop --merge, or use --format hf")
    mode: Literal["merge", "adapter", "gguf"] = "gguf" if fmt == "gguf" else "adapter" if merge is False else "merge"
    if source is not None and source.is_dir():  # the adapter directory, a run's (RUN/train) or a train stage's
        found = [d for d in (source, source / "train" / "adapter", source / "adapter") if (d / CONFIG_FILE).is_file()]
        adapter = adapter or (found[0] if found else source)
    elif source is not None:
        cfg = load(source)
        adapter = adapter or cfg.run_dir / "train" / "adapter"
        out = out or cfg.run_dir / "export" / {"merge": "merged", "adapter": "adapter", "gguf": "gguf"}[mode]
    if adapter is None or out is None:
        raise ConfigError("export needs --adapter DIR (or the adapter directory as its argument) and --out DIR, "
                          "or a pipeline.yaml to take both from")
    m = ex.run(adapter, out, mode=mode, base=base, allow_pickle=allow_pickle, allow_unverified=allow_unverified,
               force=force, tolerance=tolerance, gguf_dtype=gguf_dtype, gguf_base=gguf_base)
    diff = m.metrics.get("parity_max_abs_diff")
    kind = {"merge": "merged", "adapter": "adapter only", "gguf": "GGUF adapter"}[mode]
    human = f"exported ({kind}): {out}"
    if diff is not None:
        human += f"\nparity: max |logit difference| {diff:.3g} (tolerance {tolerance:.3g})"
    if mode == "gguf":
        human += (f"\nllama.cpp: llama-cli -m {m.extra.get('base_gguf') or 'BASE.gguf'} --lora {out}/adapter.gguf"
                  f"\nOllama:    ollama create NAME -f {out}/Modelfile && ollama run NAME")
    for problem in m.extra.get("vllm_problems") or []:
        human += f"\nvLLM will not load it: {problem}"
    emit(ctx, {"out_dir": str(out), "mode": m.extra.get("mode"), "metrics": m.metrics,
          "vllm_problems": m.extra.get("vllm_problems"), "base_gguf": m.extra.get("base_gguf")}, human)


@app.command()
def rebuild(ctx: typer.Context,
            ref: Annotated[str, typer.Argument(help="Version to rebuild: NAME@vN, NAME@ALIAS or NAME.",
                                               show_default=False)],
            registry: RegistryUrlOpt = None,
            out: Annotated[Path | None, typer.Option("--out", help="New directory for the rebuild (default: "
                                                        "rebuilds/NAME-vN).", show_default=False)] = None,
            atol: Annotated[float, typer.Option(help="Largest absolute difference allowed between the recorded "
                                                "and rebuilt adapter weights.")] = 1e-4,
            rtol: Annotated[float, typer.Option(help="Relative tolerance for recorded metrics.")] = 0.02,
            evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Also re-run the A/B "
                                                   "evaluation (slow on CPU).")] = True) -> None:
    """Re-run a registered version's pipeline from its recorded inputs, config and teacher answers into
    a new directory, and compare: data hashes, adapter weights (within --atol), metrics (--rtol).
    Exit code 1 when something differs."""
    from lorapipe.cli.common import engine_events
    from lorapipe.rebuild import rebuild as do_rebuild
    from lorapipe.registry import Registry, default_url

    report = do_rebuild(Registry(registry or default_url()), ref, out, atol=atol, rtol=rtol, evaluate=evaluate,
                        events=engine_events())
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
    emit(ctx, d, "\n".join(lines))
    if not report.ok:
        raise typer.Exit(1)


