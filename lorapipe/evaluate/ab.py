"""A/B evaluation: the base model against the tuned adapter, on the same held-out inputs and rubric.

One model object serves both arms: ``model`` is a :class:`peft.PeftModel` (the adapter on the base);
the base arm's rows take no adapter (PEFT's ``__base__`` rows), so memory holds a single copy of the
base weights, and every arm's rows (eval split and check sets) decode side by side in one batch. Both
arms get the same messages (the eval row's system prompt and input) and the same
decoding settings (``evaluate.*``); an optional third arm is the base with a few-shot prompt.

Every answer is scored with :func:`lorapipe.data.rubric.score_outputs`. Per input, the tuned answer
wins, ties (equal scores) or loses against the base answer; the win rate counts a tie as half and
comes with a seeded paired-bootstrap 95 % interval (:mod:`lorapipe.evaluate.stats`). Also reported:
per-criterion mean deltas, format compliance, exact match against the reference answer, answer
length and latency, and eval loss / perplexity of both arms on the eval rows (the training masking).
With ``evaluate.pairwise_judge`` and a judge, the judge also compares each pair directly
(:mod:`lorapipe.evaluate.pairwise`).

Writes ``ab.json`` (machines), ``summary.md`` and ``report.html`` (people) and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import Row, assistant_text, user_text
from lorapipe.errors import DataError, ModelError
from lorapipe.evaluate import stats
from lorapipe.evaluate.analysis import analyse, field_table_markdown
from lorapipe.llm.base import LLM
from lorapipe.manifest import Manifest, atomic_dir, atomic_write, atomic_write_json, sha256_json, write_jsonl

Tick = Callable[[int], None]  # progress: called with the number of answers just generated
SEED = 0  # decoding and bootstrap seed: a rerun gives the same answers and the same interval
ARM_LABELS = {"base": "base + prompt", "tuned": "tuned", "few_shot": "base + few-shot prompt"}


# ------------------------------------------------------------------------------------ prompts
def prompt_messages(cfg, row: dict[str, Any]) -> list[dict[str, str]]:
    """The row's conversation up to (not including) the reply, with the task's system prompt first."""
    messages = [dict(m) for m in row["messages"][:-1]]
    if not messages or messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.task.system_prompt})
    return messages


def few_shot_prefix(cfg, few_shot_messages: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
    """System prompt plus worked example turns, from ``few_shot_messages`` or ``teacher.few_shot``."""
    if few_shot_messages is not None:
        msgs = [dict(m) for m in few_shot_messages]
    elif cfg.teacher is not None and cfg.teacher.few_shot:
        msgs = []
        for ex in cfg.teacher.few_shot:
            msgs += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": ex.output}]
    else:
        return None
    if not msgs or msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": cfg.task.system_prompt})
    return msgs


def arms_for(cfg, few_shot_messages: list[dict[str, str]] | None = None) -> list[str]:
    """The arms an A/B answers with: base and tuned, plus the few-shot prompt when asked for and possible."""
    wanted = few_shot_messages is not None or cfg.evaluate.few_shot_arm
    return ["base", "tuned"] + (["few_shot"] if wanted and few_shot_prefix(cfg, few_shot_messages) else [])


def trainer_log_of(adapter_dir: Path, log_file: Path | None = None) -> list[dict[str, Any]] | None:
    """The trainer's log history for an adapter: ``log_file`` (the train stage's trainer_log.json), else
    one next to or inside the adapter folder, else a trainer_state.json's ``log_history``; None if none."""
    for p in (log_file, adapter_dir.parent / "trainer_log.json", adapter_dir / "trainer_log.json"):
        if p is not None and p.is_file():
            return json.loads(p.read_text())
    for p in (adapter_dir / "trainer_state.json", adapter_dir.parent / "trainer_state.json"):
        if p.is_file():
            return json.loads(p.read_text()).get("log_history")
    return None


# ------------------------------------------------------------------------------------ exact match
def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: what "the same text" means for exact match."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def parse_json(text: str) -> Any:
    """The JSON value in ``text`` (a ```json fence is allowed), or raise ValueError."""
    cleaned = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text)
    return json.loads(cleaned)


def exact_match(output: str, reference: str, as_json: bool) -> bool:
    """Parsed-JSON equality when ``as_json`` (unparseable output never matches), else normalised text."""
    if as_json:
        try:
            return parse_json(output) == parse_json(reference)
        except ValueError:
            return False
    return normalise_text(output) == normalise_text(reference)


def _reference_is_json(cfg, reference: str) -> bool:
    if cfg.task.output_schema is not None:
        return True
    try:
        return isinstance(parse_json(reference), (dict, list))
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ aggregation
def arm_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over one arm's answers: score, compliance, exact match, tokens, seconds, judge errors."""
    n = len(records)
    return {"n": n, "mean_score": stats.mean([r["score"] for r in records]),
            "compliance": sum(r["compliant"] for r in records) / n if n else float("nan"),
            "exact_match": sum(r["exact_match"] for r in records) / n if n else float("nan"),
            "mean_output_tokens": stats.mean([r["completion_tokens"] for r in records]),
            "mean_seconds": stats.mean([r["seconds"] for r in records]),
            "judge_errors": sum(1 for r in records if r.get("judge_error"))}


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], *, n_resamples: int = 2000,
            seed: int = SEED) -> dict[str, Any]:
    """Paired comparison of arm ``b`` against arm ``a`` (records in the same input order)."""
    sa, sb = [r["score"] for r in a], [r["score"] for r in b]
    results = stats.outcomes(sa, sb)
    c = stats.counts(results)
    lo, hi = stats.win_rate_ci(results, n_resamples=n_resamples, seed=seed)
    criteria = sorted({k for r in a + b for k in r["subscores"]})
    per_criterion = {}

    def sub(r: dict[str, Any], k: str) -> float | None:
        # A non-compliant answer is never judged and scores 0 in all; a compliant one without the
        # criterion (a judge error) is left out of that criterion's pairs.
        return r["subscores"].get(k, None if r["compliant"] else 0.0)

    for k in criteria:
        pairs = [(sub(x, k), sub(y, k)) for x, y in zip(a, b) if sub(x, k) is not None and sub(y, k) is not None]
        if pairs:
            ma, mb = stats.mean([p[0] for p in pairs]), stats.mean([p[1] for p in pairs])
            per_criterion[k] = {"a": ma, "b": mb, "delta": mb - ma, "n": len(pairs)}
    return {**c, "outcomes": results, "win_rate": stats.win_rate(results), "ci_low": lo, "ci_high": hi,
            "p_value": stats.sign_test_p(c["wins"], c["losses"]), "verdict": stats.verdict(lo, hi),
            "mean_delta": stats.paired_mean_delta(sa, sb, n_resamples=n_resamples, seed=seed),
            "per_criterion": per_criterion}


def verdict_line(ab: dict[str, Any]) -> str:
    """One sentence: does the tuned model beat the base, by how much, how sure."""
    c = ab["comparisons"]["tuned_vs_base"]
    base, tuned = ab["arms"]["base"]["mean_score"], ab["arms"]["tuned"]["mean_score"]
    head = {"better": "Tuned beats base", "worse": "Tuned is WORSE than base",
            "unclear": "No clear difference between tuned and base"}[c["verdict"]]
    return (f"{head}: win rate {c['win_rate']:.0%} (95% CI {c['ci_low']:.0%}–{c['ci_high']:.0%}) over "
            f"{c['n']} inputs; mean score {tuned:.2f} vs {base:.2f} ({tuned - base:+.2f}).")


def read_extra_sets(cfg) -> dict[str, list[dict[str, Any]]]:
    """The rows of every ``evaluate.extra_sets`` file, by set name (read with the task's system prompt)."""
    from lorapipe.data.formats import read_rows

    return {x.name: read_rows(cfg.resolve(x.file), cfg.task.system_prompt,
                              fields=(cfg.data.input_field, cfg.task.output_schema))
            for x in cfg.evaluate.extra_sets}


# ------------------------------------------------------------------------------------ answering
class _Answerer:
    """Answers rows with every arm (same messages, same decoding) and scores them with the rubric."""

    def __init__(self, cfg, model, tokenizer, arms: list[str], prefix: list[dict[str, str]] | None, judge,
                 progress: Tick | None):
        self.cfg, self.model, self.tokenizer, self.arms = cfg, model, tokenizer, arms
        self.prefix, self.judge, self.progress = prefix, judge, progress

    def _generate(self, prompts: list[list[dict[str, str]]]) -> dict[str, list]:
        """Every arm's answers from one generate call: base and tuned rows decode side by side in one batch
        (the base rows without the adapter), so each decode step reads the base weights once for both."""
        from lorapipe.decoding.batch import BASE_ADAPTER
        from lorapipe.generation import copy_sources, generate

        e, n = self.cfg.evaluate, len(prompts)
        tuned = self.model.active_adapter
        convs, names = [], []
        for arm in self.arms:
            convs += prompts if arm != "few_shot" else [self.prefix + p[-1:] for p in prompts]
            names += [tuned if arm == "tuned" else BASE_ADAPTER] * n
        gens = generate(self.model, self.tokenizer, convs, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                        batch_size=e.batch_size, seed=SEED, progress=self.progress, fast=self.cfg.inference.fast,
                        weights=self.cfg.inference.weights, copy_from=copy_sources(self.cfg, convs),
                        adapter_names=names)
        return {arm: gens[k * n:(k + 1) * n] for k, arm in enumerate(self.arms)}

    def __call__(self, groups: list[list[dict[str, Any]]]) -> list[dict[str, list[dict[str, Any]]]]:
        """Each group's records per arm (the eval rows, then each check set's), all answered together."""
        flat = self._answer([r for g in groups for r in g])
        out, start = [], 0
        for g in groups:
            out.append({arm: records[start:start + len(g)] for arm, records in flat.items()})
            start += len(g)
        return out

    def _answer(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        from lorapipe.data.rubric import score_outputs

        cfg, arms = self.cfg, self.arms
        prompts = [prompt_messages(cfg, r) for r in rows]
        inputs, references = [user_text(r) for r in rows], [assistant_text(r) for r in rows]
        gens = self._generate(prompts)
        # One scoring call for every arm, so a judge endpoint batches them all concurrently.
        flat = [(inp, g.text) for arm in arms for inp, g in zip(inputs, gens[arm])]
        scores = score_outputs(cfg, flat, judge=self.judge)
        n = len(rows)
        return {arm: [{"output": g.text, "score": float(sc.score), "subscores": dict(sc.subscores),
                       "reasons": list(sc.reasons), "compliant": bool(sc.compliant), "judge_error": sc.judge_error,
                       "exact_match": exact_match(g.text, ref, _reference_is_json(cfg, ref)),
                       "completion_tokens": g.completion_tokens, "seconds": g.seconds}
                      for g, sc, ref in zip(gens[arm], scores[k * n:(k + 1) * n], references)]
                for k, arm in enumerate(arms)}


def check_set(rows: list[dict[str, Any]], records: dict[str, list[dict[str, Any]]], arms: list[str]) -> dict[str, Any]:
    """One check set's part of ``ab.json``: metrics and error analysis per arm, and every answer."""
    inputs, references = [user_text(r) for r in rows], [assistant_text(r) for r in rows]
    ids = [r.get("meta", {}).get("id", str(i)) for i, r in enumerate(rows)]
    analysis = {arm: analyse(inputs, references, [x["output"] for x in records[arm]], ids) for arm in arms}
    return {"n": len(rows), "arms": {arm: {"label": ARM_LABELS[arm], **arm_metrics(records[arm])} for arm in arms},
            "analysis": analysis if any(analysis.values()) else None,
            "examples": [{"id": ids[i], "input": inputs[i], "reference": references[i],
                          **{arm: records[arm][i] for arm in arms}} for i in range(len(rows))]}


def check_set_metrics(cs: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a check set that go into the manifest (and so into the registry)."""
    out: dict[str, Any] = {"n": cs["n"]}
    for arm, m in cs["arms"].items():
        out.update({f"{arm}_exact_match": m["exact_match"], f"{arm}_mean_score": m["mean_score"]})
    return out


# ------------------------------------------------------------------------------------ the stage
def _adapter_fingerprint(model) -> str:
    from peft import get_peft_model_state_dict

    h = hashlib.sha256()
    for name, t in sorted(get_peft_model_state_dict(model).items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(cfg: PipelineConfig, model: Any, tokenizer: Any, eval_rows: list[Row], out_dir: str | Path,
        judge: LLM | None = None,
        few_shot_messages: list[dict[str, str]] | None = None, progress: Tick | None = None,
        trainer_log: list[dict[str, Any]] | None = None, probe: dict[str, Any] | None = None,
        extra_sets: dict[str, list[dict[str, Any]]] | None = None) -> Manifest:
    """Evaluate base vs tuned on ``eval_rows`` (canonical chat rows) and write the results to ``out_dir``.

    ``model`` is a ``peft.PeftModel``: the tuned arm runs with its active adapter, the base arm without it
    (for the losses, as under ``model.disable_adapter()``). ``judge`` (an :class:`lorapipe.llm.base.LLM`
    or None) scores with the rubric and, with ``evaluate.pairwise_judge``, compares pairs. The few-shot arm runs when
    ``few_shot_messages`` is given (example turns put before the input) or when ``evaluate.few_shot_arm``
    is set and ``teacher.few_shot`` has examples. ``trainer_log`` (the HF trainer's ``log_history``) and
    ``probe`` (``probe.json``) only feed the plots of ``report.html``. ``progress`` is advanced once per
    generated answer (rows x arms in all, check sets included; scoring and loss come after).
    ``extra_sets`` maps a check-set name (``evaluate.extra_sets``) to its labelled rows: every arm answers
    them too, scored with the same rubric, reported apart from the eval split. With JSON references the
    report adds exact match per field and the miss taxonomy (:mod:`lorapipe.evaluate.analysis`). Returns
    the stage's Manifest; ``manifest.metrics`` holds the headline numbers.
    """
    from lorapipe.evaluate.metrics import eval_losses
    from lorapipe.evaluate.report import write_report

    if not (hasattr(model, "disable_adapter") and hasattr(model, "peft_config")):
        raise ModelError("evaluate needs the tuned model as a peft.PeftModel (base + adapter), got "
                         f"{type(model).__name__}; load it with peft.PeftModel.from_pretrained(base, adapter_dir)")
    e = cfg.evaluate
    rows = list(eval_rows)[:e.max_inputs] if e.max_inputs else list(eval_rows)
    if not rows:
        raise DataError("no eval rows; point --eval-file (or data.eval_file) at chat rows, or run the split stage")
    notes: list[str] = []
    prefix = few_shot_prefix(cfg, few_shot_messages)
    arms = arms_for(cfg, few_shot_messages)
    if e.few_shot_arm and "few_shot" not in arms:
        notes.append("few-shot arm skipped: evaluate.few_shot_arm is set but teacher.few_shot has no examples")
    inputs = [user_text(r) for r in rows]
    references = [assistant_text(r) for r in rows]
    answer = _Answerer(cfg, model, tokenizer, arms, prefix, judge, progress)
    records, *extra = answer([rows, *(extra_sets or {}).values()])
    extra_records = dict(zip(extra_sets or {}, extra, strict=True))

    n_boot = e.bootstrap_samples
    arm_stats = {arm: {"label": ARM_LABELS[arm], **arm_metrics(records[arm])} for arm in arms}
    # loss on the reference replies, masked as in training; both arms score each batch together
    losses = eval_losses(model, tokenizer, rows, [None, model.active_adapter], max_length=cfg.train.max_seq_length,
                         batch_size=cfg.train.per_device_eval_batch_size, fast=cfg.inference.fast,
                         weights=cfg.inference.weights)
    for arm, m in zip(("base", "tuned"), losses, strict=True):
        arm_stats[arm].update(eval_loss=m["loss"], perplexity=m["perplexity"], loss_tokens=m["tokens"])
    comparisons = {"tuned_vs_base": compare(records["base"], records["tuned"], n_resamples=n_boot)}
    if "few_shot" in arms:
        comparisons["tuned_vs_few_shot"] = compare(records["few_shot"], records["tuned"], n_resamples=n_boot)
        comparisons["few_shot_vs_base"] = compare(records["base"], records["few_shot"], n_resamples=n_boot)

    pairwise = None
    if e.pairwise_judge and judge is None:
        notes.append("pairwise judge skipped: evaluate.pairwise_judge is set but no judge is configured")
    elif e.pairwise_judge:
        from lorapipe.evaluate.pairwise import judge_pairs

        pairwise = judge_pairs(cfg, judge, [(i, b["output"], t["output"]) for i, b, t in
                                            zip(inputs, records["base"], records["tuned"])],
                               n_resamples=n_boot, seed=SEED)

    examples = []
    for i, row in enumerate(rows):
        ex = {"id": row.get("meta", {}).get("id", str(i)), "input": inputs[i], "reference": references[i],
              "outcome": comparisons["tuned_vs_base"]["outcomes"][i],
              "delta": records["tuned"][i]["score"] - records["base"][i]["score"]}
        ex.update({arm: records[arm][i] for arm in arms})
        if pairwise:
            ex["pairwise"] = pairwise["pairs"][i]
        examples.append(ex)
    ids = [ex["id"] for ex in examples]
    analysis = {arm: analyse(inputs, references, [r["output"] for r in records[arm]], ids) for arm in arms}
    checks = {name: check_set(extra_sets[name], recs, arms) for name, recs in extra_records.items()}
    ab = {"task": cfg.task.name, "base_model": cfg.base_model, "adapter_sha256": _adapter_fingerprint(model),
          "n": len(rows), "arms": arm_stats, "comparisons": comparisons, "pairwise_judge": pairwise,
          "analysis": analysis if any(analysis.values()) else None, "extra_sets": checks,
          "decoding": {"temperature": e.temperature, "max_new_tokens": e.max_new_tokens, "seed": SEED,
                       "batch_size": e.batch_size},
          "judge": judge.identity() if judge is not None else None, "bootstrap_samples": n_boot,
          "notes": notes, "examples": examples}
    c = comparisons["tuned_vs_base"]
    ab["verdict"] = {"outcome": c["verdict"], "line": verdict_line(ab)}

    manifest = Manifest(stage="evaluate", config_hash=cfg.section_hash("task", "base_model", "evaluate", "inference",
                                                                      "score", "judge"),
                        inputs={"eval_rows": sha256_json(rows), "adapter": ab["adapter_sha256"],
                                **{f"extra_set:{k}": sha256_json(v) for k, v in (extra_sets or {}).items()}},
                        config=cfg.resolved(),
                        metrics={"verdict": c["verdict"], "win_rate": c["win_rate"], "win_rate_ci": [c["ci_low"],
                                 c["ci_high"]], "p_value": c["p_value"], "n": c["n"],
                                 **{f"{arm}_{k}": arm_stats[arm][k] for arm in ("base", "tuned") for k in
                                    ("mean_score", "compliance", "exact_match", "eval_loss", "perplexity")},
                                 **({"extra_sets": {k: check_set_metrics(v) for k, v in checks.items()}} if checks
                                    else {})},
                        extra={"judge": ab["judge"], "notes": notes})
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "ab.json", ab)
        atomic_write(tmp / "summary.md", summary_markdown(ab))
        write_jsonl(tmp / "answers.jsonl", examples)
        write_report(ab, tmp / "report.html", trainer_log=trainer_log, probe=probe)
        manifest.save(tmp)
    return manifest


# ------------------------------------------------------------------------------------ text summaries
def summary_text(ab: dict[str, Any]) -> str:
    """Short markdown for the terminal: the verdict line first, then the numbers behind it."""
    a, c = ab["arms"], ab["comparisons"]["tuned_vs_base"]
    lines = [f"**{ab['verdict']['line']}**",
             f"- wins / ties / losses: {c['wins']} / {c['ties']} / {c['losses']} (sign test p = {c['p_value']:.3g})"]
    for s in a.values():
        loss = f", eval loss {s['eval_loss']:.3f} (ppl {s['perplexity']:.1f})" if "eval_loss" in s else ""
        lines.append(f"- {s['label']}: score {s['mean_score']:.2f}, compliance {s['compliance']:.0%}, "
                     f"exact match {s['exact_match']:.0%}, {s['mean_output_tokens']:.0f} tokens, "
                     f"{s['mean_seconds']:.2f} s/answer{loss}")
    if "tuned_vs_few_shot" in ab["comparisons"]:
        f = ab["comparisons"]["tuned_vs_few_shot"]
        lines.append(f"- tuned vs few-shot prompt: win rate {f['win_rate']:.0%} "
                     f"(95% CI {f['ci_low']:.0%}–{f['ci_high']:.0%})")
    pw = ab.get("pairwise_judge")
    if pw:
        lines.append(f"- pairwise judge: tuned win rate {pw['win_rate']:.0%} (95% CI {pw['ci_low']:.0%}–"
                     f"{pw['ci_high']:.0%}), {pw['consistency']:.0%} of pairs judged consistently")
    for name, cs in (ab.get("extra_sets") or {}).items():
        arms = cs["arms"]
        lines.append(f"- check set `{name}` ({cs['n']} inputs, never trained on): exact match "
                     + ", ".join(f"{a['label']} {a['exact_match']:.0%}" for a in arms.values())
                     + f"; mean score {arms['tuned']['mean_score']:.2f}")
    lines += [f"- note: {n}" for n in ab.get("notes", [])]
    return "\n".join(lines)


def summary_markdown(ab: dict[str, Any]) -> str:
    """``summary.md``: the terminal summary, per-criterion deltas and the worst regressions."""
    out = [f"# A/B: {ab['task']} — base vs tuned", "", summary_text(ab), ""]
    crit = ab["comparisons"]["tuned_vs_base"]["per_criterion"]
    if crit:
        out += ["## Per criterion (mean 0-5)", "", "| criterion | base | tuned | delta |", "|---|---|---|---|"]
        out += [f"| {k} | {v['a']:.2f} | {v['b']:.2f} | {v['delta']:+.2f} |" for k, v in crit.items()]
        out.append("")
    labels = {arm: a["label"] for arm, a in ab["arms"].items()}
    for title, analysis in [("eval split", ab.get("analysis"))] + [
            (f"check set `{k}`", v.get("analysis")) for k, v in (ab.get("extra_sets") or {}).items()]:
        if analysis:
            out += [f"## Exact match per field and misses: {title}", ""] + field_table_markdown(analysis, labels) + [""]
    worst = sorted((x for x in ab["examples"] if x["delta"] < 0), key=lambda x: x["delta"])[:5]
    if worst:
        out += ["## Worst regressions", ""]
        for x in worst:
            out += [f"### {x['delta']:+.2f} ({x['base']['score']:.1f} → {x['tuned']['score']:.1f})", "",
                    f"**Input:** {' '.join(x['input'].split())[:400]}", "", "**Base:**", "", "```",
                    x["base"]["output"], "```", "", "**Tuned:**", "", "```", x["tuned"]["output"], "```", ""]
    return "\n".join(out) + "\n"
