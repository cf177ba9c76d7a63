"""Probe: does the base model already do the task with the prompt alone? ("prompt or fine-tune?")

The base model answers K sample inputs (``probe.n_inputs``) N times each (``probe.samples``, at
``probe.temperature``) with the task's system prompt; every answer is scored on the task's rubric
(:func:`lorapipe.data.rubric.score_outputs`). The verdict is ``prompt`` — prompting is enough, no
fine-tune needed — when the format-compliance rate is at least ``probe.min_compliance`` *and* the
mean score at least ``probe.min_score``; otherwise ``fine-tune``. The spread of the scores across
samples of the same input says how (un)reliable the prompted model is.

Writes ``probe.json`` (machines), ``probe.md`` (people), ``samples.jsonl`` (every answer with its
score) and ``manifest.json`` into ``out_dir``, all at once (a killed probe leaves no half report).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.errors import DataError
from lorapipe.evaluate import stats
from lorapipe.llm.base import LLM
from lorapipe.manifest import Manifest, atomic_dir, atomic_write, atomic_write_json, sha256_json, write_jsonl

Tick = Callable[[int], None]  # progress: called with the number of answers just generated
SAMPLE_SEED = 0  # the probe's input sample and sampling seed: reruns probe the same inputs the same way
N_WORST = 5


def select_inputs(inputs: list[dict[str, str]], k: int, seed: int = SAMPLE_SEED) -> list[dict[str, str]]:
    """A seeded sample of ``k`` inputs, kept in file order (all of them when there are ``<= k``)."""
    if len(inputs) <= k:
        return list(inputs)
    picked = sorted(random.Random(seed).sample(range(len(inputs)), k))
    return [inputs[i] for i in picked]


def decide(compliance: float, mean_score: float, min_compliance: float, min_score: float) -> str:
    """``prompt`` when both bars are met (prompting is enough), else ``fine-tune``."""
    return "prompt" if compliance >= min_compliance and mean_score >= min_score else "fine-tune"


def analyse(records: list[dict[str, Any]], min_compliance: float, min_score: float,
            n_worst: int = N_WORST) -> dict[str, Any]:
    """Aggregate scored samples into the probe's metrics and verdict.

    ``records`` holds one dict per answer with ``input_id``, ``input``, ``output``, ``score``,
    ``compliant`` and ``reasons``. Variance is taken across the samples of each input (population
    variance), then averaged over inputs; the worst examples are the lowest-scoring answers.
    """
    if not records:
        raise DataError("the probe has no scored answers; give it at least one input (data.inputs)")
    by_input: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_input.setdefault(r["input_id"], []).append(r)
    scores = [float(r["score"]) for r in records]
    compliance = sum(1 for r in records if r["compliant"]) / len(records)
    mean_score = stats.mean(scores)
    per_input = [{"input_id": k, "input": v[0]["input"], "mean_score": stats.mean([x["score"] for x in v]),
                  "variance": stats.variance([x["score"] for x in v]),
                  "compliance": sum(1 for x in v if x["compliant"]) / len(v)} for k, v in by_input.items()]
    worst = sorted(records, key=lambda r: (r["score"], r["compliant"]))[:n_worst]
    verdict = decide(compliance, mean_score, min_compliance, min_score)
    failed = []
    if compliance < min_compliance:
        failed.append(f"format compliance {compliance:.0%} < {min_compliance:.0%}")
    if mean_score < min_score:
        failed.append(f"mean score {mean_score:.2f} < {min_score:.2f}")
    return {
        "verdict": verdict,
        "prompting_enough": verdict == "prompt",
        "why": ("misses: " + "; ".join(failed)) if failed else (
            f"meets both bars: compliance {compliance:.0%} >= {min_compliance:.0%} and mean score "
            f"{mean_score:.2f} >= {min_score:.2f}"),
        "compliance": compliance,
        "mean_score": mean_score,
        "score_std": stats.variance(scores) ** 0.5,
        "mean_within_input_variance": stats.mean([p["variance"] for p in per_input]),
        "max_within_input_variance": max(p["variance"] for p in per_input),
        "n_inputs": len(by_input),
        "n_answers": len(records),
        "thresholds": {"min_compliance": min_compliance, "min_score": min_score},
        "per_input": per_input,
        "worst": [{k: r[k] for k in ("input_id", "input", "output", "score", "compliant", "reasons")}
                  for r in worst],
    }


def run(cfg: PipelineConfig, model: Any, tokenizer: Any, inputs: list[dict[str, str]], out_dir: str | Path,
        judge: LLM | None = None,
        progress: Tick | None = None) -> Manifest:
    """Probe the base ``model`` on ``inputs`` (``[{"id", "text"}]``) and write the report to ``out_dir``.

    ``judge`` is an :class:`lorapipe.llm.base.LLM` or None (rule checks only). ``progress`` is advanced
    once per generated answer (``min(n_inputs, len(inputs)) * samples`` in all). Returns the stage's
    :class:`~lorapipe.manifest.Manifest`; ``manifest.metrics["verdict"]`` is ``prompt`` or ``fine-tune``.
    """
    from lorapipe.data.rubric import score_outputs
    from lorapipe.generation import copy_sources, generate

    p = cfg.probe
    if not inputs:
        raise DataError("the probe needs sample inputs; set data.inputs (or data.train_file) in the config")
    chosen = select_inputs(inputs, p.n_inputs)
    conversations, owners = [], []
    for item in chosen:
        for s in range(p.samples):
            conversations.append([{"role": "system", "content": cfg.task.system_prompt},
                                  {"role": "user", "content": item["text"]}])
            owners.append((item, s))
    gens = generate(model, tokenizer, conversations, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                    batch_size=cfg.evaluate.batch_size, seed=SAMPLE_SEED, progress=progress, fast=cfg.inference.fast,
                    weights=cfg.inference.weights, copy_from=copy_sources(cfg, conversations))
    scores = score_outputs(cfg, [(item["text"], g.text) for (item, _), g in zip(owners, gens)], judge=judge)
    records = [{"input_id": item["id"], "sample": s, "input": item["text"], "output": g.text,
                "score": float(sc.score), "subscores": dict(sc.subscores), "reasons": list(sc.reasons),
                "compliant": bool(sc.compliant), "judge_error": sc.judge_error,
                "completion_tokens": g.completion_tokens, "seconds": g.seconds}
               for (item, s), g, sc in zip(owners, gens, scores)]
    result = analyse(records, p.min_compliance, p.min_score)
    result.update(task=cfg.task.name, base_model=cfg.base_model, samples_per_input=p.samples,
                  temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                  judge=judge.identity() if judge is not None else None,
                  judge_errors=sum(1 for r in records if r["judge_error"]),
                  mean_completion_tokens=stats.mean([r["completion_tokens"] for r in records]))
    manifest = Manifest(stage="probe",
                        config_hash=cfg.section_hash("task", "base_model", "probe", "inference", "score", "judge"),
                        inputs={"inputs": sha256_json(chosen)}, config=cfg.resolved(),
                        metrics={k: result[k] for k in ("verdict", "prompting_enough", "compliance", "mean_score",
                                                        "mean_within_input_variance", "n_inputs", "n_answers")},
                        extra={"judge": result["judge"]})
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "probe.json", result)
        atomic_write(tmp / "probe.md", markdown(result))
        write_jsonl(tmp / "samples.jsonl", records)
        manifest.save(tmp)
    return manifest


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def summary(probe_json: dict[str, Any] | str | Path) -> str:
    """A few terminal lines: the verdict first, then the numbers behind it."""
    r = probe_json if isinstance(probe_json, dict) else json.loads(Path(probe_json).read_text())
    head = ("Prompting is enough: the base model already does the task with the prompt."
            if r["verdict"] == "prompt" else "Fine-tune: the prompted base model falls short.")
    lines = [f"**{head}**",
             f"- {r['why']}",
             (f"- compliance {r['compliance']:.0%}, mean score {r['mean_score']:.2f}/5 over {r['n_answers']} "
              f"answers ({r['n_inputs']} inputs x {r.get('samples_per_input', '?')} samples)"),
             (f"- spread across samples of one input: mean variance {r['mean_within_input_variance']:.2f}, "
              f"max {r['max_within_input_variance']:.2f}")]
    if r.get("worst"):
        w = r["worst"][0]
        lines.append(f"- worst answer ({w['score']:.1f}/5): {_clip(w['output'], 100)!s}")
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    """The probe report for people: verdict, numbers, worst examples with the rubric's reasons."""
    out = [f"# Probe: {r.get('task', '')}", "", summary(r), "", "## Worst answers", ""]
    for w in r["worst"]:
        out += [f"### {w['score']:.1f}/5 — {'compliant' if w['compliant'] else 'NOT compliant'}", "",
                f"**Input:** {_clip(w['input'], 400)}", "", "**Output:**", "", "```", w["output"], "```", ""]
        out += [f"- {reason}" for reason in w["reasons"]] + [""]
    out += ["## Per input", "", "| input | mean score | variance | compliance |", "|---|---|---|---|"]
    for q in r["per_input"]:
        cell = _clip(q["input"], 80).replace("|", "\\|")
        out.append(f"| {cell} | {q['mean_score']:.2f} | {q['variance']:.2f} | {q['compliance']:.0%} |")
    return "\n".join(out) + "\n"
