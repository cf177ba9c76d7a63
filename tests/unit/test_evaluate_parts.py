"""A/B building blocks without a model: exact match, paired comparison, pairwise judge, report HTML."""

from __future__ import annotations

import re

import pytest

from lorapipe.config import PipelineConfig
from lorapipe.evaluate import ab, pairwise, report, svg
from lorapipe.llm.base import Completion, Usage


def make_cfg(**task) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "task": {"name": "t", "description": "Extract the name.", "system_prompt": "SYS", **task},
        "data": {"train_file": "rows.jsonl"}})


@pytest.mark.parametrize("output, reference, as_json, expected", [
    ('{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}', True, True),  # key order and spacing do not matter
    ('```json\n{"a": 1}\n```', '{"a": 1}', True, True),
    ('{"a": 1.0}', '{"a": 1}', True, True),
    ('{"a": 2}', '{"a": 1}', True, False),
    ("not json", '{"a": 1}', True, False),
    ("  Hello,\n  WORLD ", "hello, world", False, True),
    ("ﬁne", "fine", False, True),  # NFKC folds the ligature
    ("hello world!", "hello world", False, False),
])
def test_exact_match(output, reference, as_json, expected):
    assert ab.exact_match(output, reference, as_json) is expected


def test_prompt_messages_add_the_system_prompt_when_missing():
    cfg = make_cfg()
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert ab.prompt_messages(cfg, row) == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]
    row2 = {"messages": [{"role": "system", "content": "own"}, *row["messages"]]}
    assert ab.prompt_messages(cfg, row2)[0]["content"] == "own"


def test_few_shot_prefix_from_messages_or_teacher():
    cfg = make_cfg()
    assert ab.few_shot_prefix(cfg, None) is None
    shots = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert ab.few_shot_prefix(cfg, shots) == [{"role": "system", "content": "SYS"}, *shots]
    cfg2 = PipelineConfig.model_validate({
        "task": {"name": "t", "description": "d", "system_prompt": "SYS"}, "data": {"inputs": "in.txt"},
        "teacher": {"kind": "python", "function": "m:f", "few_shot": [{"input": "x", "output": "y"}]}})
    assert ab.few_shot_prefix(cfg2, None) == [{"role": "system", "content": "SYS"}, *shots]


def rec(score: float, subs: dict | None = None) -> dict:
    return {"score": score, "subscores": subs or {}, "compliant": score > 0, "exact_match": False,
            "completion_tokens": 10, "seconds": 0.1, "output": "o", "reasons": []}


@pytest.mark.parametrize("base, tuned, wins, ties, losses, win_rate, verdict", [
    ([0] * 12, [5] * 12, 12, 0, 0, 1.0, "better"),
    ([3] * 10, [3] * 10, 0, 10, 0, 0.5, "unclear"),
    ([4] * 10, [1] * 10, 0, 0, 10, 0.0, "worse"),
    ([1, 2, 3, 4], [2, 2, 1, 5], 2, 1, 1, 0.625, "unclear"),
])
def test_compare_counts_and_verdict(base, tuned, wins, ties, losses, win_rate, verdict):
    c = ab.compare([rec(s) for s in base], [rec(s) for s in tuned], n_resamples=500)
    assert (c["wins"], c["ties"], c["losses"], c["n"]) == (wins, ties, losses, len(base))
    assert c["win_rate"] == pytest.approx(win_rate)
    assert c["ci_low"] <= c["win_rate"] <= c["ci_high"]
    assert c["verdict"] == verdict
    assert c["mean_delta"]["delta"] == pytest.approx(sum(tuned) / len(tuned) - sum(base) / len(base))


def test_compare_per_criterion_non_compliant_counts_zero_judge_error_is_left_out():
    base = [rec(2, {"rules": 5, "accuracy": 1}), rec(0, {"rules": 0}), rec(3, {"rules": 5})]
    tuned = [rec(4, {"rules": 5, "accuracy": 4}), rec(5, {"rules": 5, "accuracy": 5}),
             rec(5, {"rules": 5, "accuracy": 5})]
    # Pair 2: the base answer failed the format (never judged: 0). Pair 3: the base answer complied
    # but has no judge score (a judge error), so that pair says nothing about accuracy.
    crit = ab.compare(base, tuned, n_resamples=100)["per_criterion"]
    assert crit["rules"] == {"a": pytest.approx(10 / 3), "b": 5.0, "delta": pytest.approx(5 / 3), "n": 3}
    assert crit["accuracy"] == {"a": 0.5, "b": 4.5, "delta": 4.0, "n": 2}


# ---------------------------------------------------------------------------------- pairwise judge
class ScriptedJudge:
    """Answers each pairwise request with ``pick(answer_a, answer_b)``."""

    def __init__(self, pick):
        self.pick, self.usage, self.requests = pick, Usage(), []

    def identity(self):
        return {"kind": "python", "model": "scripted"}

    def complete(self, requests, progress=None):
        out = []
        for r in requests:
            self.requests.append(r)
            text = r.messages[-1]["content"]
            a = re.search(r"### Answer A\n(.*?)\n\n### Answer B", text, re.DOTALL).group(1)
            b = re.search(r"### Answer B\n(.*?)\n\nWhich answer", text, re.DOTALL).group(1)
            out.append(Completion(text=self.pick(a, b)))
        if progress:
            progress(len(requests))
        return out


ITEMS = [("in1", "short", "a much longer answer"), ("in2", "longer base answer", "tiny"), ("in3", "same", "same")]


@pytest.mark.parametrize("name, pick, outcomes, consistency", [
    ("prefers longer", lambda a, b: '{"winner": "%s"}' % ("A" if len(a) > len(b) else "B" if len(b) > len(a)
                                                          else "tie"), [1, -1, 0], 1.0),
    ("always first (position bias)", lambda a, b: '{"winner": "A", "reason": "first"}', [0, 0, 0], 0.0),
    ("always tie", lambda a, b: "winner: tie", [0, 0, 0], 1.0),
    ("garbage", lambda a, b: "I cannot decide", [0, 0, 0], 0.0),
])
def test_pairwise_swaps_positions_and_inconsistent_is_tie(name, pick, outcomes, consistency):
    judge = ScriptedJudge(pick)
    r = pairwise.judge_pairs(make_cfg(quality_criteria=["names the person"]), judge, ITEMS, n_resamples=200)
    assert [p["outcome"] for p in r["pairs"]] == outcomes, name
    assert r["consistency"] == pytest.approx(consistency)
    assert len(judge.requests) == 2 * len(ITEMS)
    # Each input is asked twice, once with base first and once with tuned first.
    first, second = judge.requests[0].messages[-1]["content"], judge.requests[1].messages[-1]["content"]
    assert "### Answer A\nshort" in first and "### Answer A\na much longer answer" in second
    assert "names the person" in first


@pytest.mark.parametrize("text, expected", [
    ('{"winner": "B", "reason": "x"}', "B"), ('```json\n{"winner": "a"}\n```', "A"), ('"tie"', "tie"),
    ('Sure. {"winner": "B"', "B"), ("B", "B"), ("neither", None), ("", None),
])
def test_parse_winner(text, expected):
    assert pairwise.parse_winner(text) == expected


# ---------------------------------------------------------------------------------- report HTML
def synthetic_ab(n: int = 6) -> dict:
    base = [rec(s, {"rules": s, "accuracy": s / 2}) for s in (0, 1, 3, 4, 2, 5)[:n]]
    tuned = [rec(s, {"rules": s, "accuracy": s}) for s in (5, 4, 3, 2, 5, 5)[:n]]
    for i, r in enumerate(base + tuned):
        r["output"] = f"<script>alert({i})</script> & answer {i}"
    c = ab.compare(base, tuned, n_resamples=200)
    arms = {"base": {"label": "base + prompt", **ab.arm_metrics(base), "eval_loss": 2.0, "perplexity": 7.4},
            "tuned": {"label": "tuned", **ab.arm_metrics(tuned), "eval_loss": 1.0, "perplexity": 2.7}}
    examples = [{"id": str(i), "input": f"<b>input</b> {i}", "reference": "r", "outcome": c["outcomes"][i],
                 "delta": tuned[i]["score"] - base[i]["score"], "base": base[i], "tuned": tuned[i]} for i in range(n)]
    out = {"task": "t<x>", "base_model": "m", "adapter_sha256": "ab" * 32, "n": n, "arms": arms,
           "comparisons": {"tuned_vs_base": c}, "pairwise_judge": None, "decoding": {}, "judge": None,
           "notes": [], "examples": examples}
    out["verdict"] = {"outcome": c["verdict"], "line": ab.verdict_line(out)}
    return out


def test_report_escapes_every_text_and_has_no_script():
    html = report.render(synthetic_ab(), trainer_log=[{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5}])
    assert "<script" not in html
    assert "&lt;script&gt;alert(0)&lt;/script&gt; &amp; answer 0" in html
    assert "&lt;b&gt;input&lt;/b&gt; 0" in html and "t&lt;x&gt;: base vs tuned" in html
    for element in ('id="verdict"', 'id="win-rate"', 'id="loss-plot"', 'id="score-hist"', 'id="criteria-plot"',
                    'id="examples"', 'id="regressions"'):
        assert element in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)  # nothing fetched from the network


def test_report_without_trainer_log_says_so():
    html = report.render(synthetic_ab())
    assert "No trainer log was given" in html


def test_score_histogram_bins():
    labels, counts = report.score_histogram(synthetic_ab())
    assert labels == ["0–1", "1–2", "2–3", "3–4", "4–5"]
    assert counts == {"base": [1, 1, 1, 1, 2], "tuned": [0, 0, 1, 1, 4]}  # a 5 falls in the last bin


def test_summary_text_verdict_first():
    text = ab.summary_text(synthetic_ab())
    first = text.splitlines()[0]
    assert first.startswith("**") and "win rate" in first and "95% CI" in first
    assert "wins / ties / losses: 3 / 2 / 1" in text


@pytest.mark.parametrize("lo, hi, expected", [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0, 5, [0, 1, 2, 3, 4, 5]), (3, 3, [3, 3.2, 3.4, 3.6, 3.8, 4.0]),
    (0.13, 0.91, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0, 97, [0, 20, 40, 60, 80, 100]),
])
def test_nice_ticks(lo, hi, expected):
    assert svg.nice_ticks(lo, hi) == pytest.approx(expected)
