"""Pairwise judging: the judge sees both answers to the same input and picks the better one.

Judges favour whichever answer they read first (position bias), so every pair is asked twice with
the answers swapped. Only a verdict that survives the swap counts; an inconsistent or unparseable
pair is a tie. The result is the tuned model's win rate from the judge's point of view, next to the
rubric-score win rate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from lorapipe.evaluate import stats
from lorapipe.llm.base import ChatRequest

SYSTEM = ("You are a strict, impartial evaluator. You compare two answers, A and B, that two assistants gave "
          "to the same input for the task below, and decide which answer does the task better. Judge only "
          "the answers' quality against the task; ignore their order and length. Reply with JSON only: "
          '{"winner": "A" | "B" | "tie", "reason": "<one sentence>"}')
_WINNER = re.compile(r'winner"?\s*[:=]\s*"?\s*(A|B|tie)\b', re.IGNORECASE)


def task_brief(cfg) -> str:
    """What the judge is told about the task: description, format and criteria."""
    t = cfg.task
    parts = [f"Task: {t.description}", f"System prompt the assistants were given: {t.system_prompt}"]
    if t.format_spec:
        parts.append(f"Required output format: {t.format_spec}")
    if t.output_schema:
        parts.append("The output must be JSON valid against this schema: " + json.dumps(t.output_schema))
    if t.quality_criteria:
        parts.append("A good answer:\n" + "\n".join(f"- {c}" for c in t.quality_criteria))
    if t.negative_criteria:
        parts.append("A good answer never:\n" + "\n".join(f"- {c}" for c in t.negative_criteria))
    return "\n\n".join(parts)


def build_request(brief: str, input_text: str, answer_a: str, answer_b: str) -> ChatRequest:
    user = (f"{brief}\n\n### Input\n{input_text}\n\n### Answer A\n{answer_a}\n\n### Answer B\n{answer_b}\n\n"
            "Which answer is better? Reply with the JSON object only.")
    return ChatRequest(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                       temperature=0.0, max_tokens=200)


def parse_winner(text: str) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` or None (unparseable) from a judge's reply."""
    text = (text or "").strip()
    cleaned = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    try:
        obj = json.loads(cleaned)
        w = str(obj.get("winner", "")) if isinstance(obj, dict) else str(obj)
    except json.JSONDecodeError:
        m = _WINNER.search(text)
        w = m.group(1) if m else text
    w = w.strip().strip('."\'').lower()
    return {"a": "A", "b": "B", "tie": "tie"}.get(w)


def judge_pairs(cfg, judge, items: list[tuple[str, str, str]], *, n_resamples: int = 2000, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Ask ``judge`` about each ``(input, base_answer, tuned_answer)`` twice, positions swapped.

    Returns outcome counts for the tuned model (``+1`` win, ``0`` tie, ``-1`` loss per pair), its win rate
    with a bootstrap interval, the share of pairs judged consistently, and each pair's raw verdicts.
    """
    brief = task_brief(cfg)
    requests = []
    for inp, base, tuned in items:
        requests.append(build_request(brief, inp, base, tuned))  # A = base, B = tuned
        requests.append(build_request(brief, inp, tuned, base))  # A = tuned, B = base
    from lorapipe.llm.calls import call  # failures come back as Completion.error (a tie), not raised

    completions = call(judge, requests, progress)
    results, pairs, unparsed, consistent = [], [], 0, 0
    for i in range(len(items)):
        first = parse_winner(completions[2 * i].text) if not completions[2 * i].error else None
        second = parse_winner(completions[2 * i + 1].text) if not completions[2 * i + 1].error else None
        unparsed += (first is None) + (second is None)
        # Map each verdict to the *model* it names, so the two orders can be compared.
        v1 = {"A": "base", "B": "tuned", "tie": "tie"}.get(first or "")
        v2 = {"A": "tuned", "B": "base", "tie": "tie"}.get(second or "")
        agreed = v1 is not None and v1 == v2
        consistent += agreed
        outcome = {"tuned": 1, "base": -1}.get(v1 or "", 0) if agreed else 0
        results.append(outcome)
        pairs.append({"base_first": first, "tuned_first": second, "outcome": outcome, "consistent": agreed})
    lo, hi = stats.win_rate_ci(results, n_resamples=n_resamples, seed=seed)
    c = stats.counts(results)
    return {**c, "win_rate": stats.win_rate(results), "ci_low": lo, "ci_high": hi,
            "p_value": stats.sign_test_p(c["wins"], c["losses"]),
            "consistency": consistent / len(items) if items else float("nan"),
            "unparsed": unparsed, "judge": judge.identity(), "pairs": pairs}
