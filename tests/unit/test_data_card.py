"""Data card over the chained data stages, and the `lorapipe generate` / `lorapipe score` commands."""

from __future__ import annotations

import json
import textwrap

import pytest
from data_fakes import INPUTS, FakeLLM, contact_teacher, make_cfg, prompt_kind, read_jsonl
from typer.testing import CliRunner

from lorapipe.data import augment, card, generate, score, split


@pytest.fixture
def run_dirs(tmp_path):
    """generate -> score -> augment -> split with one bad teacher answer and 2 samples per input."""
    cfg = make_cfg(tmp_path, generate={"samples_per_input": 2}, augment={"edge_cases": {"adversarial": 2}},
                   split={"eval_fraction": 0.2})

    def respond(req):
        if prompt_kind(req) == "teacher" and "Bob Stone" in req.messages[-1]["content"] \
                and "Paraphrased" not in req.messages[-1]["content"]:
            return "Bob Stone <bob@stone.io>"  # not JSON: rejected by the score
        return contact_teacher(req)

    teacher, judge = FakeLLM(respond), FakeLLM(name="judge")
    d = {s: tmp_path / s for s in ("generate", "score", "augment", "split")}
    generate.run(cfg, teacher, d["generate"])
    score.run(cfg, judge, d["generate"] / "generated.jsonl", d["score"])
    augment.run(cfg, teacher, judge, d["score"] / "scored.jsonl", d["augment"])
    split.run(cfg, d["augment"] / "augmented.jsonl", d["split"])
    return cfg, d, teacher, judge


def test_card_counts_reasons_histogram_origins_and_usage(run_dirs, tmp_path):
    cfg, d, teacher, judge = run_dirs
    c = card.build_card(cfg, d)
    assert c["counts"] == {"generate": {"rows": 12, "failed": 0}, "score": {"kept": 10, "rejected": 2},
                           "augment": {"rows": 22, "added": 12, "rejected": 0},
                           "split": {"train": c["counts"]["split"]["train"], "eval": c["counts"]["split"]["eval"],
                                     "duplicates": 10}}
    assert c["counts"]["split"]["train"] + c["counts"]["split"]["eval"] == 12
    assert c["rejected_by_kind"] == {"duplicate": 10, "format": 2}
    assert c["top_reasons"][0] == {"reason": "format: the output is not valid JSON: Expecting value (line 1, column 1)",
                                   "rows": 2}
    assert c["score_histogram"] == {"0-1": 2, "1-2": 0, "2-3": 0, "3-4": 0, "4-5": 22}
    assert c["origin_mix"] == {"edge:adversarial": 2, "paraphrase": 5, "teacher": 5}
    tl = c["token_lengths"]
    assert tl["tokenizer"] == "whitespace"
    assert tl["train"]["output"]["count"] == c["counts"]["split"]["train"] and tl["train"]["output"]["max"] == 5
    # usage is summed over the stages from their manifests (each records what it spent)
    assert c["teacher"]["identity"] == {"kind": "fake", "model": "fake"}
    assert c["teacher"]["usage"]["calls"] == teacher.usage.calls == 12 + 5 + 2 + 12
    assert c["judge"]["usage"]["calls"] == judge.usage.calls == 10 + 12
    assert set(c["teacher"]["stages"]) == {"generate", "augment"}
    live = card.build_card(cfg, d, llms={"teacher": teacher})
    assert live["teacher"]["usage"]["calls"] == teacher.usage.calls and live["teacher"]["stages"] is None


def test_card_files_markdown_and_summary(run_dirs, tmp_path):
    cfg, d, *_ = run_dirs
    m = card.run(cfg, d, tmp_path / "card")
    md = (tmp_path / "card" / "data_card.md").read_text()
    for heading in ("# Data card: contacts", "## Rows per stage", "## Rejected, by kind of reason",
                    "## Score histogram (0–5)", "## Origin mix of the final rows",
                    "## Token lengths (whitespace tokens)",
                    "## Teacher", "## Judge"):
        assert heading in md
    assert "| format | 2 |" in md and "| edge:adversarial | 2 |" in md
    data = json.loads((tmp_path / "card" / "data_card.json").read_text())
    assert card.summary(data).splitlines()[:4] == [
        "generated 12 rows (0 failed)", "kept 10, rejected 2", "augmented +12 (rejected 0)",
        f"train {data['counts']['split']['train']} / eval {data['counts']['split']['eval']} (10 duplicates dropped)"]
    assert "split/train.jsonl" in m.inputs and set(m.outputs) == {"data_card.json", "data_card.md"}


def test_card_with_a_tokenizer_and_partial_stages(run_dirs):
    cfg, d, *_ = run_dirs

    class CharTokenizer:
        name_or_path = "chars"

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text)}

    c = card.build_card(cfg, {"generate": d["generate"]}, tokenizer=CharTokenizer())
    assert set(c["counts"]) == {"generate"} and c["token_lengths"]["tokenizer"] == "chars"
    assert c["token_lengths"]["all"]["input"]["min"] == min(len(t) for t in INPUTS)
    assert c["judge"] is None and c["score_histogram"] == dict.fromkeys(card.BINS, 0)


# ---------------------------------------------------------------------------------------- CLI
TEACHER = textwrap.dedent('''
    import json, re
    def answer(messages, **_):
        text = messages[-1]["content"]
        if "grader" in messages[0]["content"]:
            return '{"score": 5, "rationale": "fine"}'
        inp = re.search(r"Input:\\n<<<\\n(.*?)\\n>>>", text, re.S).group(1)
        email = re.search(r"[\\w.]+@[\\w.]+\\w", inp)
        name = re.search(r"\\b([A-Z][a-z]+ [A-Z][a-z]+)\\b", inp)
        return json.dumps({"name": name and name.group(1), "email": email and email.group(0)})
''')


def test_cli_generate_then_score(tmp_path, monkeypatch):
    from lorapipe.cli import app

    (tmp_path / "cli_teacher_mod.py").write_text(TEACHER)
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in INPUTS))
    cfg = make_cfg(tmp_path)
    spec = {k: v for k, v in cfg.resolved().items() if k in ("task",)}
    (tmp_path / "pipeline.yaml").write_text(json.dumps({
        **spec, "data": {"inputs": "inputs.jsonl"}, "output_dir": "out",
        "teacher": {"kind": "python", "function": "cli_teacher_mod:answer"},
        "judge": {"kind": "python", "function": "cli_teacher_mod:answer"}}))
    monkeypatch.setenv("LORAPIPE_QUIET", "1")
    runner = CliRunner()
    res = runner.invoke(app, ["generate", str(tmp_path / "pipeline.yaml")])
    assert res.exit_code == 0, res.output
    assert "generated 6 rows (0 failed)" in res.output
    assert f"generated: {tmp_path / 'out' / 'generate' / 'generated.jsonl'}" in res.output
    res = runner.invoke(app, ["--json", "score", str(tmp_path / "pipeline.yaml")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["metrics"]["kept"] == 6 and out["metrics"]["judge_errors"] == 0
    assert len(read_jsonl(tmp_path / "out" / "score" / "scored.jsonl")) == 6


def test_cli_score_before_generate_generates_first(tmp_path, monkeypatch):
    from lorapipe.cli import app

    (tmp_path / "cli_teacher_first.py").write_text(TEACHER)
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in INPUTS))
    spec = {k: v for k, v in make_cfg(tmp_path).resolved().items() if k in ("task",)}
    (tmp_path / "pipeline.yaml").write_text(json.dumps({
        **spec, "data": {"inputs": "inputs.jsonl"}, "output_dir": "out",
        "teacher": {"kind": "python", "function": "cli_teacher_first:answer"}}))
    monkeypatch.setenv("LORAPIPE_QUIET", "1")
    res = CliRunner().invoke(app, ["--json", "score", str(tmp_path / "pipeline.yaml")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["kept"] == 6
    assert len(read_jsonl(tmp_path / "out" / "generate" / "generated.jsonl")) == 6
