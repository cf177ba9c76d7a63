"""Score stage: every rule check, judge parsing and retries, the combined score, and run()."""

from __future__ import annotations

import json
import textwrap

import pytest
from data_fakes import FakeLLM, contact_teacher, make_cfg, prompt_kind, read_jsonl

from lorapipe.data import rubric, score
from lorapipe.data.formats import make_row
from lorapipe.errors import ConfigError
from lorapipe.llm.base import Completion

INPUT = "Hi, I'm Ann Lee, write to ann.lee@example.com about the invoice."
GOOD = '{"name": "Ann Lee", "email": "ann.lee@example.com"}'


@pytest.fixture(autouse=True)
def _checks_module(tmp_path, monkeypatch):
    """A custom-check module next to the config, as a user would put it."""
    (tmp_path / "my_checks.py").write_text(textwrap.dedent("""
        def ok(inp, out): return True
        def no(inp, out): return False
        def vague(inp, out): return (2, "too vague")
        def full(inp, out): return (5, "fine")
        def boom(inp, out): raise ValueError("bad row")
        def weird(inp, out): return "yes"
    """))
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    yield
    import sys
    sys.modules.pop("my_checks", None)


# name, rules overrides, output, compliant, rule score, expected reasons
RULE_CASES = [
    ("valid", {}, GOOD, True, 5.0, []),
    ("empty", {}, "  ", False, 0.0, ["format: the output is empty"]),
    ("not json", {}, "Ann Lee <ann.lee@example.com>", False, 0.0,
     ["format: the output is not valid JSON: Expecting value (line 1, column 1)"]),
    ("fenced", {}, f"```json\n{GOOD}\n```", False, 0.0,
     ["format: the output is wrapped in a ``` code fence; it must be bare JSON"]),
    ("wrong type", {}, '{"name": 5, "email": null}', False, 0.0,
     ["schema: output_schema violated at `$.name`: 5 is not of type 'string', 'null'"]),
    ("missing key", {}, '{"name": "Ann Lee"}', False, 0.0,
     ["schema: output_schema violated at `$`: 'email' is a required property"]),
    ("schema off", {"json_schema": False}, "free text", True, 5.0, []),
    ("regex ok", {"json_schema": False, "regex": r"^\{.*\}$"}, GOOD, True, 5.0, []),
    ("regex bad", {"json_schema": False, "regex": r"^\{.*\}$"}, "name: Ann", False, 0.0,
     [r"regex: the output does not match score.rules.regex `^\{.*\}$`"]),
    ("too short", {"json_schema": False, "min_length": 10}, "Ann", False, 0.0,
     ["length: the output has 3 characters, fewer than score.rules.min_length=10"]),
    ("too long", {"json_schema": False, "max_length": 5}, "Ann Lee", False, 0.0,
     ["length: the output has 7 characters, more than score.rules.max_length=5"]),
    ("grounded", {"grounding": True}, GOOD, True, 5.0, []),
    ("grounded despite case and spaces", {"grounding": True}, '{"name": "ANN   lee", "email": null}', True, 5.0, []),
    ("hallucinated", {"grounding": True}, '{"name": "Ann Lee", "email": "ann@lee.com"}', True, 0.0,
     ["grounding: `$.email` = 'ann@lee.com' does not appear in the input"]),
    ("custom true", {"custom": ["my_checks:ok"]}, GOOD, True, 5.0, []),
    ("custom false", {"custom": ["my_checks:no"]}, GOOD, True, 0.0, ["custom: `my_checks:no` failed"]),
    ("custom score", {"custom": ["my_checks:vague", "my_checks:full"]}, GOOD, True, 3.5,
     ["custom: `my_checks:vague`: too vague"]),
    ("custom raises", {"custom": ["my_checks:boom"]}, GOOD, True, 0.0,
     ["custom: `my_checks:boom` raised ValueError: bad row"]),
    ("custom odd return", {"custom": ["my_checks:weird"]}, GOOD, True, 0.0,
     ["custom: `my_checks:weird` returned 'yes'; return a bool or (score 0-5, reason)"]),
    ("format failure zeroes content", {"grounding": True}, '{"name": "X Y"}', False, 0.0,
     ["schema: output_schema violated at `$`: 'email' is a required property",
      "grounding: `$.name` = 'X Y' does not appear in the input"]),
]


@pytest.mark.parametrize("name, rules, output, compliant, rule_score, reasons", RULE_CASES,
                         ids=[c[0] for c in RULE_CASES])
def test_rule_checks(tmp_path, name, rules, output, compliant, rule_score, reasons):
    cfg = make_cfg(tmp_path, score={"rules": rules})
    [rs] = rubric.score_outputs(cfg, [(INPUT, output)])
    assert (rs.compliant, rs.score, rs.reasons) == (compliant, rule_score, reasons)
    assert rs.subscores == {"rules": rule_score} and rs.judge_error is None


def test_schema_formats_and_patterns_are_checked(tmp_path):
    from data_fakes import SCHEMA

    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "email": {"type": ["string", "null"], "format": "email"},
                                       "name": {"type": ["string", "null"], "pattern": "^[A-Z][a-z]+ [A-Z][a-z]+$"}}}
    cfg = make_cfg(tmp_path)
    cfg.task.output_schema = schema
    good, bad = rubric.score_outputs(cfg, [(INPUT, GOOD), (INPUT, '{"name": "ann", "email": "ann.lee"}')])
    assert good.compliant and good.reasons == []
    assert not bad.compliant and bad.reasons == [
        "schema: output_schema violated at `$.email`: 'ann.lee' is not a 'email'",
        "schema: output_schema violated at `$.name`: 'ann' does not match '^[A-Z][a-z]+ [A-Z][a-z]+$'"]


@pytest.mark.parametrize("rules, message", [
    ({"regex": "(unclosed"}, "score.rules.regex: not a valid regular expression: missing ), unterminated subpattern"),
    ({"custom": ["no_such_module_xyz:f"]}, "score.rules.custom[0]: cannot import module `no_such_module_xyz`"),
    ({"custom": ["my_checks:ok", "my_checks:missing"]},
     "score.rules.custom[1]: module `my_checks` has no function `missing`"),
    ({"custom": ["justaname"]}, "score.rules.custom[0]: `justaname` is not `module:function`"),
])
def test_bad_rule_config(tmp_path, rules, message):
    cfg = make_cfg(tmp_path, score={"rules": rules})
    with pytest.raises(ConfigError) as e:
        rubric.score_outputs(cfg, [(INPUT, GOOD)])
    assert message in str(e.value)


@pytest.mark.parametrize("text, parsed", [
    ('{"score": 4, "rationale": "ok"}', (4.0, "ok")),
    ('Sure! Here it is: {"score": 3.5, "rationale": "partly"} Hope this helps.', (3.5, "partly")),
    ('{"note": {"x": 1}} then {"score": "5"}', (5.0, "")),
    ('```json\n{"rationale": "fine", "score": 2}\n```', (2.0, "fine")),
    ("I'd give it a 4", "no JSON object with a `score` in the answer \"I'd give it a 4\""),
    ('{"score": 7, "rationale": "great"}', "`score` 7 is outside 0-5 in the answer"),
    ('{"score": true}', "`score` is not a number (True) in the answer"),
    ('{"score": "high"}', "`score` is not a number ('high') in the answer"),
])
def test_parse_judge(text, parsed):
    got = rubric.parse_judge(text)
    if isinstance(parsed, tuple):
        assert got == parsed
    else:
        assert isinstance(got, str) and got.startswith(parsed)


def judge_of(answers: dict[str, str] | str):
    """A judge answering per criterion (or always the same)."""
    def respond(req):
        assert prompt_kind(req) == "judge"
        if isinstance(answers, str):
            return answers
        crit = next(c for c in answers if f"Criterion to grade: {c}" in req.messages[-1]["content"])
        return answers[crit]
    return FakeLLM(respond, name="judge")


def test_combined_score_weights_rules_and_judge(tmp_path):
    cfg = make_cfg(tmp_path, score={"judge_criteria": ["Exact", "Complete"], "rule_weight": 0.25})
    judge = judge_of({"Exact": '{"score": 4, "rationale": "one typo"}', "Complete": '{"score": 2, "rationale": "x"}'})
    [rs, bad] = rubric.score_outputs(cfg, [(INPUT, GOOD), (INPUT, "not json")], judge=judge)
    assert rs.score == 0.25 * 5 + 0.75 * 3
    assert rs.subscores == {"rules": 5.0, "Exact": 4.0, "Complete": 2.0}
    assert rs.rationale == "Exact: one typo; Complete: x"
    assert rs.reasons == ["judge: `Complete` scored 2/5: x"]  # 4 is not below score.threshold 4
    # a format failure is 0 overall and costs no judge call
    assert (bad.score, bad.compliant) == (0.0, False)
    assert len(judge.requests) == 2


def test_default_criteria_are_the_task_quality_criteria(tmp_path):
    cfg = make_cfg(tmp_path)
    judge = judge_of('{"score": 5}')
    [rs] = rubric.score_outputs(cfg, [(INPUT, GOOD)], judge=judge)
    assert list(rs.subscores) == ["rules", cfg.task.quality_criteria[0]]
    assert rubric.judge_criteria(cfg, None) == []
    no_criteria = make_cfg(tmp_path, task={"quality_criteria": []})
    assert rubric.judge_criteria(no_criteria, judge) == [rubric.GENERIC_CRITERION]


def test_judge_retry_uses_a_new_sample_index(tmp_path):
    cfg = make_cfg(tmp_path, score={"judge_retries": 2})
    answers = iter(["no idea", '{"score": 5, "rationale": "good"}'])
    judge = FakeLLM(lambda req: next(answers), name="judge")
    [rs] = rubric.score_outputs(cfg, [(INPUT, GOOD)], judge=judge)
    assert rs.judge_error is None and rs.score == 5.0
    assert [r.sample_index for r in judge.requests] == [0, 1]


@pytest.mark.parametrize("answer, problem", [
    ("Looks great to me!", "no JSON object with a `score` in the answer 'Looks great to me!'"),
    (Completion(text="", error="HTTP 500 after 5 retries"), "request failed: HTTP 500 after 5 retries"),
])
def test_judge_garbage_is_a_judge_error_and_the_row_is_kept_out(tmp_path, answer, problem):
    cfg = make_cfg(tmp_path, score={"judge_retries": 2})
    generated = tmp_path / "generated.jsonl"
    rows = [make_row(cfg.task.system_prompt, INPUT, GOOD, origin="teacher")]
    generated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = FakeLLM(lambda req: answer, name="judge")
    m = score.run(cfg, judge, generated, tmp_path / "score")
    assert len(judge.requests) == 3  # one try + judge_retries, then give up (no crash)
    assert read_jsonl(tmp_path / "score" / "scored.jsonl") == []
    [rej] = read_jsonl(tmp_path / "score" / "rejected.jsonl")
    crit = cfg.task.quality_criteria[0]
    expected = f"judge: error: `{crit}`: no usable answer after 3 tries ({problem})"
    assert rej["meta"]["reasons"][0] == expected
    assert m.metrics["judge_errors"] == 1 and m.metrics["rejected_by_kind"] == {"judge": 1}


def test_run_keeps_and_rejects_with_reasons(tmp_path):
    cfg = make_cfg(tmp_path, score={"rules": {"grounding": True}, "threshold": 4.0})
    outputs = [GOOD, '{"name": "Ann Lee", "email": "ann@lee.com"}', "```json\n" + GOOD + "\n```",
               '{"name": "Ann Lee", "email": "ann.lee@example.com"} '.strip()]
    rows = [make_row(cfg.task.system_prompt, INPUT, o, origin="teacher", source_id="s1") for o in outputs[:3]]
    rows.append(make_row(cfg.task.system_prompt, "Bob Stone, bob@stone.io", '{"name": "Bob Stone", '
                         '"email": "bob@stone.io"}', origin="teacher", source_id="s2"))
    gen = tmp_path / "generated.jsonl"
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = FakeLLM(contact_teacher, name="judge")  # answers {"score": 5}
    m = score.run(cfg, judge, gen, tmp_path / "score")
    kept = read_jsonl(tmp_path / "score" / "scored.jsonl")
    rejected = read_jsonl(tmp_path / "score" / "rejected.jsonl")
    assert [r["meta"]["source_id"] for r in kept] == ["s1", "s2"]
    assert kept[0]["meta"]["score"] == 5.0 and kept[0]["meta"]["subscores"]["rules"] == 5.0
    assert kept[0]["meta"]["rationale"].endswith(": exact") and kept[0]["meta"]["origin"] == "teacher"
    assert [r["meta"]["reasons"] for r in rejected] == [
        ["threshold: score 2.5 is below score.threshold 4",
         "grounding: `$.email` = 'ann@lee.com' does not appear in the input"],
        ["format: the output is wrapped in a ``` code fence; it must be bare JSON"],
    ]
    assert m.metrics == {"rows": 4, "kept": 2, "rejected": 2, "non_compliant": 1, "judge_errors": 0,
                         "mean_score": 3.125, "rejected_by_kind": {"format": 1, "grounding": 1, "threshold": 1}}
    assert not (tmp_path / "score" / "score.partial.jsonl").exists()


def test_score_run_resumes_from_its_journal(tmp_path):
    cfg = make_cfg(tmp_path)
    rows = [make_row(cfg.task.system_prompt, f"Person{i} Smith p{i}@x.org", GOOD) for i in range(40)]
    gen = tmp_path / "generated.jsonl"
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    crashing = FakeLLM(contact_teacher, name="judge", stop_after=20)
    with pytest.raises(KeyboardInterrupt):
        score.run(cfg, crashing, gen, tmp_path / "score")
    judge = FakeLLM(contact_teacher, name="judge")
    m = score.run(cfg, judge, gen, tmp_path / "score")
    assert m.extra["resumed"] == 16  # one chunk of rows was journaled before the crash
    assert len(judge.requests) == 40 - 16 and m.metrics["rows"] == 40


def test_editing_a_custom_check_changes_the_key_of_every_stage_that_scores(tmp_path):
    """The runner keys probe, score, augment and evaluate on the check's source, not only the YAML."""
    from lorapipe.pipeline import Pipeline
    from lorapipe.pipeline.deps import fingerprint

    cfg = make_cfg(tmp_path, score={"rules": {"custom": ["my_checks:ok"]}})
    pipe = Pipeline(cfg)

    def keys() -> dict[str, dict[str, str]]:
        return {s.name: fingerprint(cfg, s.deps(s.files()), lambda spec: "weights")[1]
                for s in pipe.stages() if s.name in ("probe", "score", "augment", "evaluate", "generate")}

    before = keys()
    (tmp_path / "my_checks.py").write_text((tmp_path / "my_checks.py").read_text() + "\n# stricter now\n")
    after = keys()
    assert {s for s in after if after[s] != before[s]} == {"probe", "score", "augment", "evaluate"}
    assert all(after[s]["code:check0"] != before[s]["code:check0"] for s in ("probe", "score", "augment", "evaluate"))


def test_a_rerun_rescores_after_a_custom_check_is_edited(tmp_path):
    cfg = make_cfg(tmp_path, score={"rules": {"custom": ["my_checks:ok"]}})
    gen = tmp_path / "generated.jsonl"
    row = make_row(cfg.task.system_prompt, INPUT, GOOD, id="r1", source_id="r1", origin="teacher")
    gen.write_text(json.dumps(row) + "\n")
    first = score.run(cfg, None, gen, tmp_path / "score")
    assert first.metrics["kept"] == 1
    (tmp_path / "my_checks.py").write_text((tmp_path / "my_checks.py").read_text().replace(
        "def ok(inp, out): return True", "def ok(inp, out): return False"))
    # the edited module is imported afresh (no stale copy in sys.modules)
    second = score.run(make_cfg(tmp_path, score={"rules": {"custom": ["my_checks:ok"]}}), None, gen,
                       tmp_path / "score")
    assert second.metrics["kept"] == 0
