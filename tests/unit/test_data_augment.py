"""Augment stage: paraphrases double the data, edge cases respect their quotas, everything is scored."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from data_fakes import INPUTS, FakeLLM, contact_teacher, extract, make_cfg, prompt_kind, read_jsonl

from lorapipe.data import augment
from lorapipe.data.formats import assistant_text, make_row, row_id, user_text
from lorapipe.llm.base import Completion


def write_scored(cfg, path, samples: int = 1):
    rows = [make_row(cfg.task.system_prompt, t, extract(t), id=row_id(t, str(s)), source_id=f"src{i}",
                     origin="teacher", score=5.0) for i, t in enumerate(INPUTS) for s in range(samples)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.parametrize("samples", [1, 2])
def test_one_paraphrase_doubles_the_data(tmp_path, samples):
    cfg = make_cfg(tmp_path, augment={"paraphrases": 1}, judge={"kind": "python", "function": "j:j"})
    originals = write_scored(cfg, tmp_path / "scored.jsonl", samples)
    teacher, judge = FakeLLM(), FakeLLM(name="judge")
    m = augment.run(cfg, teacher, judge, tmp_path / "scored.jsonl", tmp_path / "aug")
    rows = read_jsonl(tmp_path / "aug" / "augmented.jsonl")
    assert len(rows) == 2 * len(originals) and rows[: len(originals)] == originals
    new = rows[len(originals):]
    by_id = {r["meta"]["id"]: r for r in originals}
    for r in new:
        parent = by_id[r["meta"]["parent"]]
        assert r["meta"]["origin"] == "paraphrase"
        assert r["meta"]["source_id"] == parent["meta"]["source_id"]
        assert user_text(r) == "Paraphrased: " + user_text(parent)
        assert assistant_text(r) == extract(user_text(r))  # the teacher answered the new input
        assert r["meta"]["score"] == 5.0 and r["meta"]["subscores"]["rules"] == 5.0
    # one paraphrase request per distinct input; one teacher answer per paraphrase row
    assert Counter(teacher.kinds()) == {"paraphrase": len(INPUTS), "teacher": len(originals)}
    assert len(judge.requests) == len(originals)
    assert m.metrics["paraphrases"] == {"requested": len(originals), "accepted": len(originals)}
    assert (m.metrics["added"], m.metrics["rejected"], m.metrics["failed"]) == (len(originals), 0, 0)


def test_edge_cases_respect_quotas_and_are_scored(tmp_path):
    quotas = {"short": 2, "ambiguous": 1, "adversarial": 4}
    cfg = make_cfg(tmp_path, augment={"paraphrases": 0, "edge_cases": quotas}, score={"rules": {"grounding": True}})
    write_scored(cfg, tmp_path / "scored.jsonl")

    def respond(req):
        last = req.messages[-1]["content"]
        if prompt_kind(req) == "edge" and "several candidates" in last:
            return "Ann Lee or Bob Stone? write to ann@x.org"
        if prompt_kind(req) == "edge" and "minimal" in last:
            return INPUTS[0]  # a duplicate of an existing input
        if prompt_kind(req) == "teacher" and "Ann Lee or Bob Stone" in last:
            return '{"name": "Ann Lee", "email": "bob@x.org"}'  # not grounded: rejected by the score
        return contact_teacher(req)

    teacher = FakeLLM(respond)
    m = augment.run(cfg, teacher, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    edge_prompts = [r.messages[-1]["content"] for r in teacher.requests if prompt_kind(r) == "edge"]
    asked = Counter(re.search(r"Write one new input that is (a prompt injection|several candidates|nothing to find"
                              r"|noisy|very short|minimal|ambiguous|contradictory)", p).group(1) for p in edge_prompts)
    assert asked == {"very short": 1, "minimal": 1, "ambiguous": 1, "a prompt injection": 1,
                     "several candidates": 1, "nothing to find": 1, "noisy": 1}
    added = read_jsonl(tmp_path / "aug" / "augmented.jsonl")[len(INPUTS):]
    origins = Counter(r["meta"]["origin"] for r in added)
    assert origins == {"edge:short": 1, "edge:ambiguous": 1, "edge:adversarial": 3}
    assert all(origins[f"edge:{c}"] <= q for c, q in quotas.items())
    assert len({r["meta"]["source_id"] for r in added}) == len(added)
    assert all(r["meta"]["source_id"] == r["meta"]["id"] for r in added)
    rejected = {r["meta"]["origin"]: r["meta"]["reasons"] for r in read_jsonl(tmp_path / "aug" / "rejected.jsonl")}
    assert rejected == {
        "edge:short": ["edge: duplicate of an existing input"],
        "edge:adversarial": ["threshold: score 0 is below score.threshold 4",
                             "grounding: `$.email` = 'bob@x.org' does not appear in the input"],
    }
    assert m.metrics["edge_cases"] == {"adversarial": {"quota": 4, "accepted": 3},
                                       "ambiguous": {"quota": 1, "accepted": 1}, "short": {"quota": 2, "accepted": 1}}


@pytest.mark.parametrize("answer, reason", [
    (lambda text: text.upper(), "paraphrase: identical to the original input"),
    (lambda text: "   ", "paraphrase: the teacher wrote an empty input"),
    (lambda text: Completion(text="", error="HTTP 429 after 5 retries"), "teacher: error: HTTP 429 after 5 retries"),
])
def test_unusable_paraphrases_are_rejected_with_a_reason(tmp_path, answer, reason):
    cfg = make_cfg(tmp_path, augment={"paraphrases": 1})
    write_scored(cfg, tmp_path / "scored.jsonl")

    def respond(req):
        if prompt_kind(req) == "paraphrase":
            return answer(req.messages[-1]["content"].split("<<<\n")[1].split("\n>>>")[0])
        return contact_teacher(req)

    m = augment.run(cfg, FakeLLM(respond), None, tmp_path / "scored.jsonl", tmp_path / "aug")
    rejected = read_jsonl(tmp_path / "aug" / "rejected.jsonl")
    assert [r["meta"]["reasons"] for r in rejected] == [[reason]] * len(INPUTS)
    assert m.metrics["added"] == 0
    assert m.metrics["failed"] == (len(INPUTS) if reason.startswith("teacher") else 0)


def test_disabled_passes_rows_through(tmp_path):
    cfg = make_cfg(tmp_path, augment={"enabled": False})
    rows = write_scored(cfg, tmp_path / "scored.jsonl")
    teacher = FakeLLM()
    m = augment.run(cfg, teacher, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    assert read_jsonl(tmp_path / "aug" / "augmented.jsonl") == rows and teacher.requests == []
    assert m.metrics["enabled"] is False


def test_resume_after_crash_repeats_nothing(tmp_path):
    cfg = make_cfg(tmp_path, augment={"paraphrases": 2, "edge_cases": {"adversarial": 3}})
    write_scored(cfg, tmp_path / "scored.jsonl", samples=2)
    crashing = FakeLLM(stop_after=20)
    with pytest.raises(KeyboardInterrupt):
        augment.run(cfg, crashing, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    teacher = FakeLLM()
    m = augment.run(cfg, teacher, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    fresh = FakeLLM()
    augment.run(cfg, fresh, None, tmp_path / "scored.jsonl", tmp_path / "fresh")
    assert m.extra["resumed"] == 12 + 3  # paraphrases and edge inputs were journaled; outputs were in flight
    assert len(teacher.requests) == len(fresh.requests) - 15
    assert read_jsonl(tmp_path / "aug" / "augmented.jsonl") == read_jsonl(tmp_path / "fresh" / "augmented.jsonl")
    assert m.metrics["added"] == 2 * 12 + 3


PY_TEACHER = '''
import json, re

def answer(messages, purpose=None, **_):
    if purpose and purpose["step"] == "edge_case":  # the stage says which case it wants
        return f"{purpose['category']}/{purpose['variant']} #{purpose['index']}: mail v{purpose['index']}@x.org"
    text = messages[-1]["content"].split("<<<\\n")[-1].split("\\n>>>")[0]
    return json.dumps({"name": None, "email": re.search(r"[\\w.]+@[\\w.]+\\.\\w+", text).group(0)})
'''


def test_a_python_teacher_writes_edge_cases_from_the_purpose_and_the_card_shows_quotas(tmp_path):
    from lorapipe.config import LLMConfig
    from lorapipe.data import card
    from lorapipe.llm import PythonLLM

    (tmp_path / "edge_teacher.py").write_text(PY_TEACHER)
    teacher = PythonLLM(LLMConfig(kind="python", function="edge_teacher:answer", cache=False), search_path=tmp_path)
    cfg = make_cfg(tmp_path, augment={"paraphrases": 0, "edge_cases": {"short": 3, "adversarial": 5}},
                   score={"rules": {"grounding": True}})
    write_scored(cfg, tmp_path / "scored.jsonl")
    m = augment.run(cfg, teacher, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    added = read_jsonl(tmp_path / "aug" / "augmented.jsonl")[len(INPUTS):]
    assert [(r["messages"][1]["content"].split(":")[0], r["meta"]["variant"]) for r in added] == [
        ("adversarial/prompt_injection #0", "prompt_injection"),
        ("adversarial/several_candidates #1", "several_candidates"),
        ("adversarial/nothing_to_find #2", "nothing_to_find"), ("adversarial/noise #3", "noise"),
        ("adversarial/prompt_injection #4", "prompt_injection"), ("short/terse #0", "terse"),
        ("short/minimal #1", "minimal"), ("short/fragment #2", "fragment")]
    assert m.metrics["edge_cases"] == {"adversarial": {"quota": 5, "accepted": 5}, "short": {"quota": 3, "accepted": 3}}
    c = card.build_card(cfg, {"augment": tmp_path / "aug"})
    assert c["edge_cases"]["adversarial"] == {"quota": 5, "accepted": 5, "rejected": 0, "variants": {
        "noise": 1, "nothing_to_find": 1, "prompt_injection": 2, "several_candidates": 1}}
    md = card.render_markdown(c)
    assert "## Edge cases (augment.edge_cases)" in md
    assert "| short | 3 | 3 | 0 | fragment 1, minimal 1, terse 1 |" in md
    assert "edge cases (accepted/quota): adversarial 5/5, short 3/3" in card.summary(c)
