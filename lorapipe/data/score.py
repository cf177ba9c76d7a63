"""Score stage: every generated row gets the rubric's 0–5 score (:mod:`lorapipe.data.rubric`); rows at
or above ``score.threshold`` go to ``scored.jsonl`` (with ``meta.score``/``subscores``/``rationale``),
the others to ``rejected.jsonl`` (with ``meta.reasons``)."""


from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import assistant_text, read_rows, row_id, user_text
from lorapipe.data.journal import Journal, PhaseProgress, batched, phase
from lorapipe.data.rubric import (
    RubricScore,
    apply_score,
    judge_criteria,
    reason_kind,
    rows_per_journal_write,
    score_outputs,
)
from lorapipe.llm.base import LLM
from lorapipe.llm.calls import identity_of, usage_delta, usage_of
from lorapipe.manifest import Manifest, sha256_file, sha256_json, write_jsonl


def _key(row: dict[str, Any]) -> str:
    # The content is part of the key: two rows sharing an id by mistake never share a score.
    return row_id(str(row["meta"]["id"]), user_text(row), assistant_text(row))


def run(cfg: PipelineConfig, judge: LLM | None, in_file: str | Path, out_dir: str | Path,
        progress: PhaseProgress | None = None) -> Manifest:
    """Score every row of ``in_file`` (``generated.jsonl``) into ``out_dir``: ``scored.jsonl`` (kept)
    and ``rejected.jsonl``. ``judge`` may be None (rule checks only). Resumable (a
    journal of scored rows); whether to run at all is the runner's decision."""
    in_file, out_dir = Path(in_file), Path(out_dir)
    rows = read_rows(in_file, cfg.task.system_prompt)
    sections = ("task", "judge", "score")
    manifest = Manifest(stage="score",
                        config_hash=sha256_json({"cfg": cfg.section_hash(*sections), "judge": identity_of(judge)}),
                        inputs={"rows": sha256_file(in_file)},
                        config={k: v for k, v in cfg.resolved().items() if k in sections})
    threshold = cfg.score.threshold
    journal = Journal(out_dir / "score.partial.jsonl", manifest.key())
    usage0 = usage_of(judge)
    keys = [_key(r) for r in rows]
    todo = [r for r, k in zip(rows, keys) if k not in journal]
    tick = phase(progress, "score: rows", len(rows), len(rows) - len(todo))
    for chunk in batched(todo, rows_per_journal_write(cfg, judge)):
        scores = score_outputs(cfg, [(user_text(r), assistant_text(r)) for r in chunk], judge, tick)
        journal.append([{"k": _key(r), "score": s.to_dict()} for r, s in zip(chunk, scores)])
    kept, rejected, kinds = [], [], Counter()
    scores_all = []
    for r, k in zip(rows, keys):
        rs = RubricScore.from_dict(journal.entries[k]["score"])
        scores_all.append(rs)
        row, why = apply_score(r, rs, threshold)
        (rejected if why else kept).append(row)
        kinds.update({reason_kind(x) for x in why})
    write_jsonl(out_dir / "scored.jsonl", kept)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    journal.close(delete=True)
    manifest.metrics = {
        "rows": len(rows), "kept": len(kept), "rejected": len(rejected),
        "non_compliant": sum(not s.compliant for s in scores_all),
        "judge_errors": sum(s.judge_error is not None for s in scores_all),
        "mean_score": round(sum(s.score for s in scores_all) / len(scores_all), 4),
        "rejected_by_kind": dict(sorted(kinds.items())),
    }
    manifest.extra = {"judge": identity_of(judge), "judge_usage": usage_delta(usage0, usage_of(judge)),
                      "criteria": judge_criteria(cfg, judge), "resumed": journal.resumed}
    manifest.save(out_dir)
    return manifest
