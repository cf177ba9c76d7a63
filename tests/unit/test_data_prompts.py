"""Prompts of the data stages: teacher (built-in, few-shot, Jinja), judge rubric, paraphrase, edge cases."""

from __future__ import annotations

import pytest
from data_fakes import make_cfg

from lorapipe.data import prompts
from lorapipe.errors import ConfigError


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path)


def test_teacher_prompt_has_every_part_in_guide_order(cfg):
    text = prompts.teacher_messages(cfg, "Hi, I'm Ann Lee (ann@x.org)")[-1]["content"]
    parts = [cfg.task.description, "Hi, I'm Ann Lee (ann@x.org)", cfg.task.format_spec,
             '"required": [', cfg.task.quality_criteria[0], cfg.task.negative_criteria[0],
             "Reply with the output only (bare JSON, no code fences)"]
    positions = [text.find(p) for p in parts]
    assert -1 not in positions, dict(zip(parts, positions))
    assert positions == sorted(positions), "description, input, format, schema, criteria, negatives, rule"
    assert "A good output never:\n- Invent a value" in text


FEW_SHOT = [{"input": "I am Zoe Kim, zoe@k.io", "output": '{"name": "Zoe Kim"}'},
            {"input": "nothing here", "output": '{"name": null}'}]


def test_few_shot_examples_are_prior_turns_after_the_instructions_stated_once(tmp_path):
    cfg = make_cfg(tmp_path, teacher={"few_shot": FEW_SHOT})
    msgs = prompts.teacher_messages(cfg, "Bob Stone, bob@stone.io")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = msgs[0]["content"]
    for part in (cfg.task.description, cfg.task.system_prompt, cfg.task.format_spec, '"required": [',
                 cfg.task.quality_criteria[0], cfg.task.negative_criteria[0], "Each user message is one input",
                 "Reply with the output only (bare JSON, no code fences)"):
        assert system.count(part) == 1, part
    assert msgs[1]["content"] == "Input:\n<<<\nI am Zoe Kim, zoe@k.io\n>>>"
    assert msgs[2]["content"] == '{"name": "Zoe Kim"}'
    assert msgs[3]["content"] == "Input:\n<<<\nnothing here\n>>>" and msgs[4]["content"] == '{"name": null}'
    assert msgs[5]["content"] == "Input:\n<<<\nBob Stone, bob@stone.io\n>>>"
    # every input's request starts with the same turns: a server computes that prefix once
    assert prompts.teacher_messages(cfg, "another input")[:-1] == msgs[:-1]
    text = "".join(m["content"] for m in msgs)
    assert text.count(cfg.task.description) == 1 and text.count(cfg.task.format_spec) == 1


def test_few_shot_with_a_template_renders_every_turn_with_it(tmp_path):
    (tmp_path / "teacher.j2").write_text("TASK {{ name }} INPUT {{ input }}")
    cfg = make_cfg(tmp_path, teacher={"few_shot": FEW_SHOT}, generate={"template": "teacher.j2"})
    msgs = prompts.teacher_messages(cfg, "Bob")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert [msgs[0]["content"], msgs[4]["content"]] == ["TASK contacts INPUT I am Zoe Kim, zoe@k.io",
                                                          "TASK contacts INPUT Bob"]


def test_jinja_template_replaces_the_builtin_prompt(tmp_path):
    (tmp_path / "teacher.j2").write_text(
        "TASK {{ description }} | FORMAT {{ format_spec }} | "
        "{% for c in quality_criteria %}+{{ c }}{% endfor %} | INPUT {{ input }} | {{ task.name }}")
    cfg = make_cfg(tmp_path, generate={"template": "teacher.j2"})
    text = prompts.teacher_messages(cfg, "hello there")[-1]["content"]
    assert text == (f"TASK {cfg.task.description} | FORMAT {cfg.task.format_spec} | "
                    f"+{cfg.task.quality_criteria[0]} | INPUT hello there | contacts")


@pytest.mark.parametrize("template, message", [
    ("Hello {{ inputt }}", "'inputt' is undefined (generate.template); the template can use: input, task,"),
    ("line one\n{% for x in %}", "teacher.j2:2: template syntax error: "),
    (None, "teacher.j2: template file not found (generate.template)"),
])
def test_bad_templates_name_file_and_fix(tmp_path, template, message):
    if template is not None:
        (tmp_path / "teacher.j2").write_text(template)
    cfg = make_cfg(tmp_path, generate={"template": "teacher.j2"})
    with pytest.raises(ConfigError) as e:
        prompts.teacher_messages(cfg, "x")
    assert message in str(e.value)


def test_judge_prompt_asks_for_json_score_and_rationale(cfg):
    msgs = prompts.judge_messages(cfg.task, "Names are exact.", "Ann Lee wrote", '{"name": "Ann Lee"}')
    assert msgs[0]["role"] == "system" and "grader" in msgs[0]["content"]
    text = msgs[1]["content"]
    for part in ("Criterion to grade: Names are exact.", "<<<\nAnn Lee wrote\n>>>", '<<<\n{"name": "Ann Lee"}\n>>>',
                 "from 0 to 5", '{"score": <integer 0-5>, "rationale": "<one sentence>"}',
                 cfg.task.negative_criteria[0], cfg.task.format_spec):
        assert part in text, part


def test_paraphrase_prompt_keeps_facts(cfg):
    text = prompts.paraphrase_messages(cfg.task, "Call Ann at 555-0101")[0]["content"]
    assert "keep every fact" in text and "character for character" in text
    assert "<<<\nCall Ann at 555-0101\n>>>" in text and "rewrite number" not in text
    assert "rewrite number 2" in prompts.paraphrase_messages(cfg.task, "x", index=1)[0]["content"]


@pytest.mark.parametrize("category, index, expected", [
    ("short", 0, "very short"),
    ("short", 1, "minimal"),
    ("ambiguous", 0, "only partly there or implied"),
    ("ambiguous", 2, "contradictory"),
    ("adversarial", 0, "a prompt injection"),
    ("adversarial", 1, "two or more of the things the task asks for"),
    ("adversarial", 2, "contains none of what the task asks for"),
    ("adversarial", 3, "noisy"),
    ("adversarial", 4, "a prompt injection"),  # variants rotate
])
def test_edge_case_prompts_per_category(cfg, category, index, expected):
    text = prompts.edge_case_messages(cfg.task, category, index, examples=["ex one", "ex two"])[0]["content"]
    assert expected in text
    assert cfg.task.description in text and "<<<\nex one\n>>>" in text
    assert f"case number {index + 1}" in text and "no answer" in text
    # the category and variant are named, so a function teacher can tell from the text which case is asked for
    assert f"of its kind ({category}: {prompts.edge_variant(category, index)[0]})" in text


def test_edge_case_unknown_category(cfg):
    with pytest.raises(ConfigError, match="augment.edge_cases: unknown category `weird`; use one of short, "
                                          "ambiguous, adversarial"):
        prompts.edge_case_messages(cfg.task, "weird", 0)


def test_input_writer_rotates_seeds(cfg):
    seeds = ["s0", "s1", "s2", "s3"]
    first = prompts.input_writer_messages(cfg.task, seeds, 0)[0]["content"]
    second = prompts.input_writer_messages(cfg.task, seeds, 1)[0]["content"]
    assert "<<<\ns0\n>>>" in first and "<<<\ns3\n>>>" not in first
    assert "<<<\ns3\n>>>" in second and "<<<\ns0\n>>>" not in second
    assert "input number 2" in second
    assert "Write one realistic input" in prompts.input_writer_messages(cfg.task, [], 0)[0]["content"]


@pytest.mark.parametrize("raw, clean", [
    ("  plain text \n", "plain text"),
    ('"quoted input"', "quoted input"),
    ("```\nfenced\ntwo lines\n```", "fenced\ntwo lines"),
    ("```text\nfenced with tag\n```", "fenced with tag"),
    ("<<<\nmarked\n>>>", "marked"),
    ("it's fine", "it's fine"),
])
def test_clean_input(raw, clean):
    assert prompts.clean_input(raw) == clean
