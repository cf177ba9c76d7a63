"""Augment stage: paraphrases of kept rows and edge cases, each answered by the teacher and scored.

* **Paraphrases** — for each kept row, ``augment.paraphrases`` times: the teacher rewrites the
  input keeping every fact; the teacher then writes the output for the new input (never reusing the
  old output, which may quote the old wording); the new row is scored like any other.
  ``origin: "paraphrase"``, same ``source_id`` as its original (so the split keeps them together),
  ``meta.parent`` = the original's id. With ``paraphrases: 1`` the data roughly doubles.
* **Edge cases** — ``augment.edge_cases`` gives a quota per category (``short``, ``ambiguous``,
  ``adversarial``): that many inputs are written by the teacher (variants rotate: prompt injection,
  several candidates, nothing to find, noise...), answered and scored. ``origin: "edge:<category>"``,
  each its own ``source_id``. At most the quota is accepted per category.

Writes ``augmented.jsonl`` (the input rows + every accepted new row), ``rejected.jsonl`` (new rows
that failed, each with ``meta.reasons``) and ``manifest.json``. Resumable like generate: every
teacher answer and score is journaled per batch.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import assistant_text, make_row, read_rows, row_id, user_text
from lorapipe.data.journal import Journal, PhaseProgress, batched, complete_keyed, normalize_text, phase
from lorapipe.data.prompts import TeacherPrompt, clean_input, edge_case_messages, edge_variant, paraphrase_messages
from lorapipe.data.rubric import RubricScore, apply_score, reason_kind, rows_per_journal_write, score_outputs
from lorapipe.llm.base import LLM
from lorapipe.llm.calls import batch_size_for, identity_of, request, usage_delta, usage_of
from lorapipe.manifest import Manifest, sha256_file, sha256_json, write_jsonl

N_EXAMPLES = 3  # typical inputs shown with each edge-case request


def _rejected(cid: str, source_id: str, origin: str, reasons: list[str], input_text: str | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"meta": {"id": cid, "source_id": source_id, "origin": origin, "reasons": reasons, **extra},
            **({"input": input_text} if input_text is not None else {})}


def run(cfg: PipelineConfig, teacher: LLM, judge: LLM | None, in_file: str | Path, out_dir: str | Path,
        progress: PhaseProgress | None = None) -> Manifest:
    """Augment the kept rows of ``in_file`` (``scored.jsonl``) into ``out_dir/augmented.jsonl``.

    ``teacher`` writes paraphrases, edge-case inputs and their outputs; ``judge`` (or None: rules
    only) scores the new rows with :func:`lorapipe.data.rubric.score_outputs`. With
    ``augment.enabled: false`` the rows pass through unchanged.
    """
    in_file, out_dir = Path(in_file), Path(out_dir)
    rows = read_rows(in_file, cfg.task.system_prompt)
    prompt = TeacherPrompt.from_config(cfg)
    sections = ("task", "teacher", "judge", "score", "augment", "generate")
    template = prompt.template_path
    manifest = Manifest(
        stage="augment",
        config_hash=sha256_json({"cfg": cfg.section_hash(*sections), "teacher": identity_of(teacher),
                                 "judge": identity_of(judge)}),
        inputs={"rows": sha256_file(in_file), **({"template": sha256_file(template)} if template else {})},
        config={k: v for k, v in cfg.resolved().items() if k in sections})
    aug = cfg.augment
    if not aug.enabled:
        write_jsonl(out_dir / "augmented.jsonl", rows)
        write_jsonl(out_dir / "rejected.jsonl", [])
        manifest.metrics = {"originals": len(rows), "added": 0, "rows": len(rows), "rejected": 0, "failed": 0,
                            "enabled": False}
        manifest.save(out_dir)
        return manifest


    journal = Journal(out_dir / "augment.partial.jsonl", manifest.key())
    usage0 = {"teacher": usage_of(teacher), "judge": usage_of(judge)}
    bs = batch_size_for(cfg.teacher)
    rejected: list[dict[str, Any]] = []
    failed = 0
    seen = {normalize_text(user_text(r)) for r in rows}
    # A new input, and the rows to make from it: (row id, source_id, sample index, extra meta) each.
    cands: list[dict[str, Any]] = []

    def keyed(items: list[tuple[str, Any]], label: str) -> tuple[dict[str, str], dict[str, str]]:
        tick = phase(progress, label, len(items), sum(k in journal for k, _ in items))
        return complete_keyed(teacher, journal, items, batch_size=bs, tick=tick)

    def reject_all(targets: list[tuple[str, str, int, dict]], origin: str, reason: str, text: str | None) -> None:
        for rid, sid, _, extra in targets:
            rejected.append(_rejected(rid, sid, origin, [reason], text, **extra))

    def accept_input(key: str, origin: str, targets: list[tuple[str, str, int, dict]], texts: dict[str, str],
                     errors: dict[str, str], original: str | None = None) -> None:
        nonlocal failed
        if key not in texts:
            failed += len(targets)
            return reject_all(targets, origin, f"teacher: error: {errors.get(key, 'no answer')}", None)
        text = clean_input(texts[key])
        norm = normalize_text(text)
        kind = "paraphrase" if origin == "paraphrase" else "edge"
        problem = (f"{kind}: the teacher wrote an empty input" if not norm else
                   f"{kind}: identical to the original input" if original is not None
                   and norm == normalize_text(original) else
                   f"{kind}: duplicate of an existing input" if norm in seen else None)
        if problem:
            return reject_all(targets, origin, problem, text)
        seen.add(norm)
        cands.append({"key": key, "origin": origin, "input": text, "targets": targets})

    # 1. paraphrased inputs: one per distinct input and paraphrase index; every kept row of that
    #    input (its N samples) gets a paraphrase row, so paraphrases: 1 doubles the data.
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(row_id(normalize_text(user_text(r))), []).append(r)
    para = [(f"para:{gid}:{p}", members, p) for gid, members in groups.items() for p in range(aug.paraphrases)]
    texts, errors = keyed([(k, request(cfg.teacher, paraphrase_messages(cfg.task, user_text(m[0]), p), sample_index=p,
                                       purpose={"step": "paraphrase", "index": p, "input": user_text(m[0])}))
                           for k, m, p in para], "augment: paraphrase inputs")
    for k, members, p in para:
        targets = [(row_id("paraphrase", r["meta"]["id"], str(p)), r["meta"]["source_id"], s,
                    {"parent": r["meta"]["id"]}) for s, r in enumerate(members)]
        accept_input(k, "paraphrase", targets, texts, errors, original=user_text(members[0]))

    # 2. edge-case inputs, quota per category
    examples = [user_text(g[0]) for g in groups.values()]
    edge = [(f"edge:{cat}:{k}", cat, k) for cat, quota in sorted(aug.edge_cases.items()) for k in range(quota)]
    edge_items = []
    for key, cat, k in edge:
        shown = [examples[(k * N_EXAMPLES + j) % len(examples)] for j in range(min(N_EXAMPLES, len(examples)))]
        purpose = {"step": "edge_case", "category": cat, "variant": edge_variant(cat, k)[0], "index": k}
        edge_items.append((key, request(cfg.teacher, edge_case_messages(cfg.task, cat, k, shown), sample_index=k,
                                        purpose=purpose)))
    texts, errors = keyed(edge_items, "augment: edge-case inputs")
    for key, cat, k in edge:
        cid = row_id("edge", cat, str(k))
        accept_input(key, f"edge:{cat}", [(cid, cid, 0, {"variant": edge_variant(cat, k)[0]})], texts, errors)

    # 3. the teacher's output for every new row (the old output may quote the old wording)
    out_items, owners = [], {}
    for c in cands:
        msgs = prompt.messages(c["input"])
        for rid, sid, s, extra in c["targets"]:
            out_items.append((f"out:{rid}", request(cfg.teacher, msgs, sample_index=s)))
            owners[f"out:{rid}"] = (c, rid, sid, extra)
    outs, errors = keyed(out_items, "augment: teacher outputs")
    answered = []
    for key, _ in out_items:
        c, rid, sid, extra = owners[key]
        if key in outs:
            row = make_row(cfg.task.system_prompt, c["input"], outs[key].strip(), id=rid, source_id=sid,
                           origin=c["origin"], **extra)
            answered.append(row)
        else:
            failed += 1
            rejected.append(_rejected(rid, sid, c["origin"], [f"teacher: error: {errors.get(key, 'no answer')}"],
                                      c["input"], **extra))

    # 4. score the new rows
    todo = [r for r in answered if f"score:{r['meta']['id']}" not in journal]
    tick = phase(progress, "augment: scoring", len(answered), len(answered) - len(todo))
    for chunk in batched(todo, rows_per_journal_write(cfg, judge)):
        scores = score_outputs(cfg, [(user_text(r), assistant_text(r)) for r in chunk], judge, tick)
        journal.append([{"k": f"score:{r['meta']['id']}", "score": s.to_dict()} for r, s in zip(chunk, scores)])
    added: list[dict[str, Any]] = []
    for r in answered:
        rs = RubricScore.from_dict(journal.entries[f"score:{r['meta']['id']}"]["score"])
        row, why = apply_score(r, rs, cfg.score.threshold)
        (rejected if why else added).append(row)

    write_jsonl(out_dir / "augmented.jsonl", rows + added)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    journal.close(delete=not failed)
    by_origin = Counter(r["meta"]["origin"] for r in added)
    kinds = Counter(kind for r in rejected for kind in {reason_kind(x) for x in r["meta"]["reasons"]})
    manifest.metrics = {
        "originals": len(rows), "added": len(added), "rows": len(rows) + len(added), "rejected": len(rejected),
        "failed": failed,
        "paraphrases": {"requested": sum(len(m) for _, m, _ in para), "accepted": by_origin.get("paraphrase", 0)},
        "edge_cases": {cat: {"quota": q, "accepted": by_origin.get(f"edge:{cat}", 0)}
                       for cat, q in sorted(aug.edge_cases.items())},
        "rejected_by_kind": dict(sorted(kinds.items())),
    }
    manifest.extra = {"teacher": identity_of(teacher), "judge": identity_of(judge), "resumed": journal.resumed,
                      "teacher_usage": usage_delta(usage0["teacher"], usage_of(teacher)),
                      "judge_usage": usage_delta(usage0["judge"], usage_of(judge))}
    manifest.save(out_dir)
    return manifest
