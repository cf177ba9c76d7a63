"""Probe verdict logic on constructed scores (no model)."""

from __future__ import annotations

import pytest

from lorapipe import probe
from lorapipe.errors import DataError


def records(spec: dict[str, list[tuple[float, bool]]]) -> list[dict]:
    """``{input_id: [(score, compliant), ...]}`` -> probe records."""
    return [{"input_id": k, "input": f"input {k}", "output": f"out {k}/{i}", "score": s, "compliant": c,
             "reasons": [] if c else ["format: not JSON"]}
            for k, samples in spec.items() for i, (s, c) in enumerate(samples)]


@pytest.mark.parametrize("name, spec, verdict, compliance, mean", [
    ("all good", {"a": [(5, True), (5, True)], "b": [(4, True), (4.5, True)]}, "prompt", 1.0, 4.625),
    ("exactly at both bars", {"a": [(4, True)] * 19 + [(4, False)]}, "prompt", 0.95, 4.0),
    ("compliance just short", {"a": [(5, True)] * 18 + [(5, False)] * 2}, "fine-tune", 0.9, 5.0),
    ("score just short", {"a": [(3.9, True)] * 4}, "fine-tune", 1.0, 3.9),
    ("both short", {"a": [(0, False), (1, True)]}, "fine-tune", 0.5, 0.5),
])
def test_verdict_thresholds(name, spec, verdict, compliance, mean):
    r = probe.analyse(records(spec), min_compliance=0.95, min_score=4.0)
    assert r["verdict"] == verdict, name
    assert r["prompting_enough"] is (verdict == "prompt")
    assert r["compliance"] == pytest.approx(compliance)
    assert r["mean_score"] == pytest.approx(mean)


@pytest.mark.parametrize("spec, why", [
    ({"a": [(5, True)] * 9 + [(5, False)]}, "misses: format compliance 90% < 95%"),
    ({"a": [(3.0, True)]}, "misses: mean score 3.00 < 4.00"),
    ({"a": [(0, False)]}, "misses: format compliance 0% < 95%; mean score 0.00 < 4.00"),
    ({"a": [(4.5, True)]}, "meets both bars: compliance 100% >= 95% and mean score 4.50 >= 4.00"),
])
def test_why_names_the_failed_bar(spec, why):
    assert probe.analyse(records(spec), 0.95, 4.0)["why"] == why


def test_variance_is_across_samples_of_the_same_input():
    # Input a: samples 1 and 5 (variance 4); input b: 3 and 3 (variance 0); overall scores vary more.
    r = probe.analyse(records({"a": [(1, True), (5, True)], "b": [(3, True), (3, True)]}), 0.95, 4.0)
    assert r["mean_within_input_variance"] == pytest.approx(2.0)
    assert r["max_within_input_variance"] == pytest.approx(4.0)
    assert {p["input_id"]: p["variance"] for p in r["per_input"]} == {"a": 4.0, "b": 0.0}
    assert r["n_inputs"] == 2 and r["n_answers"] == 4


def test_worst_examples_are_the_lowest_scores_non_compliant_first():
    spec = {"a": [(4, True), (2, True)], "b": [(2, False), (5, True)], "c": [(0, False), (3, True)]}
    worst = probe.analyse(records(spec), 0.95, 4.0, n_worst=3)["worst"]
    assert [(w["input_id"], w["score"], w["compliant"]) for w in worst] == [
        ("c", 0, False), ("b", 2, False), ("a", 2, True)]
    assert worst[0]["reasons"] == ["format: not JSON"]


def test_no_answers_is_a_data_error():
    with pytest.raises(DataError, match="the probe has no scored answers"):
        probe.analyse([], 0.95, 4.0)


@pytest.mark.parametrize("n, k, expected_len", [(10, 3, 3), (3, 16, 3), (5, 5, 5)])
def test_select_inputs_is_seeded_and_keeps_file_order(n, k, expected_len):
    inputs = [{"id": str(i), "text": f"t{i}"} for i in range(n)]
    picked = probe.select_inputs(inputs, k)
    assert len(picked) == expected_len
    assert picked == probe.select_inputs(inputs, k)
    ids = [int(p["id"]) for p in picked]
    assert ids == sorted(ids)


def test_summary_leads_with_the_verdict():
    r = probe.analyse(records({"a": [(1, False), (2, True)]}), 0.95, 4.0)
    r["samples_per_input"] = 2
    text = probe.summary(r)
    assert text.splitlines()[0] == "**Fine-tune: the prompted base model falls short.**"
    assert "compliance 50%, mean score 1.50/5 over 2 answers (1 inputs x 2 samples)" in text
    ok = probe.analyse(records({"a": [(5, True)]}), 0.95, 4.0)
    assert probe.summary(ok).startswith("**Prompting is enough")
    md = probe.markdown(r)
    assert md.startswith("# Probe:") and "## Worst answers" in md and "| input a | 1.50 | 0.25 | 50% |" in md
