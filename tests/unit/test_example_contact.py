"""The demo recipe's own code: committed data is what make_inputs.py writes, and the teacher and the
rule checks agree with the references on every message (so the demo trains on the labels it reports on)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contact-extraction"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"contact_example_{name}", EXAMPLE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_committed_inputs_are_what_the_script_writes(tmp_path):
    make = _module("make_inputs")
    inputs, refs = make.make(400, 7)
    assert inputs == _jsonl(EXAMPLE / "inputs.jsonl")
    assert refs == _jsonl(EXAMPLE / "references.jsonl")
    assert make.make(50, 3) == make.make(50, 3)  # deterministic for a seed


def test_every_reference_value_is_copied_from_its_message():
    refs = {r["id"]: r for r in _jsonl(EXAMPLE / "references.jsonl")}
    for row in _jsonl(EXAMPLE / "inputs.jsonl"):
        ref = refs[row["id"]]
        assert ref["name"] and ref["name"] in row["text"]
        for key in ("email", "phone"):
            assert ref[key] is None or ref[key] in row["text"], (row["id"], key)
    # The data covers what the adapter got wrong when it was rarer: messages without an email (it
    # invented one) and honorifics in front of the name (it kept them).
    texts = {r["id"]: r["text"] for r in _jsonl(EXAMPLE / "inputs.jsonl")}
    assert sum(r["email"] is None for r in refs.values()) > 0.25 * len(refs)
    titled = [i for i, r in refs.items() if any(f"{t} {r['name']}" in texts[i] for t in ("Dr.", "Dr", "Mr.", "Ms.",
                                                                                        "Mrs.", "Prof.", "Mx."))]
    assert len(titled) > 0.05 * len(refs)


def test_teacher_and_checks_agree_with_the_references():
    teacher, checks = _module("teacher"), _module("checks")
    refs = {r["id"]: r for r in _jsonl(EXAMPLE / "references.jsonl")}
    for row in _jsonl(EXAMPLE / "inputs.jsonl"):
        want = {k: refs[row["id"]][k] for k in ("name", "email", "phone")}
        answer = teacher.extract(row["text"])
        assert json.loads(answer) == want, row["text"]
        assert checks.contact_fields(row["text"], answer) == (5.0, "name, email and phone agree with the message")


@pytest.mark.parametrize("output, problem", [
    ('{"name": "Dr. Ann Lee", "email": null, "phone": null}', "honorific"),
    ('{"name": "Ann Lee", "email": "ann@x.com", "phone": null}', "no email address"),
    ('{"name": "Ann Lee", "email": null, "phone": "5552013344"}', "not copied"),
    ('{"name": "Bob", "email": null, "phone": null}', "not copied from the message"),
    ("Sure! Here is the JSON", "not a JSON object"),
])
def test_checks_reject_what_the_task_forbids(output, problem):
    checks = _module("checks")
    score, reason = checks.contact_fields("Thanks!\n--\nDr. Ann Lee\nT: (555) 201-3344", output)
    assert score == 0.0 and problem in reason


def test_a_quoted_address_is_not_the_contacts():
    checks = _module("checks")
    text = "Hi Bo,\n\nSounds good.\n\nAnn Lee\n\nOn Tue, Bo Kim <bo@x.com> wrote:\n> Hi Ann, can you call?"
    assert checks.contact_fields(text, '{"name": "Ann Lee", "email": null, "phone": null}')[0] == 5.0
    assert "the message has no email address" in checks.contact_fields(
        text, '{"name": "Ann Lee", "email": "bo@x.com", "phone": null}')[1]


def test_unseen_messages_are_labelled_and_not_in_the_pipeline_inputs():
    unseen = _jsonl(EXAMPLE / "unseen.jsonl")
    generated = {r["text"] for r in _jsonl(EXAMPLE / "inputs.jsonl")}
    assert len(unseen) >= 50 and len({r["id"] for r in unseen}) == len(unseen)
    for r in unseen:
        assert set(r) == {"id", "text", "name", "email", "phone"}
        assert r["text"] not in generated
        assert all(r[k] is None or r[k] in r["text"] for k in ("name", "email", "phone")), r["id"]


def test_check_unseen_scores_parsed_json_per_field():
    check = _module("check_unseen")
    refs = [{"name": "Ann", "email": None, "phone": "1"}, {"name": "Bo", "email": "b@x.io", "phone": None},
            {"name": "Cy", "email": None, "phone": None}]
    outputs = ['{"phone": "1", "name": "Ann", "email": null}', '{"name": "Bo", "email": null, "phone": null}',
               "Sure! Cy"]
    exact, misses, wrong = check.score(outputs, refs)
    assert (exact, wrong) == (1, [1, 2])
    assert dict(misses) == {"email": 2, "name": 1, "phone": 1, "invalid JSON": 1}


def test_check_unseen_holdout_is_the_inputs_the_demo_does_not_read():
    from lorapipe.config import load_config

    cfg = load_config(EXAMPLE / "pipeline.yaml")
    inputs = _jsonl(EXAMPLE / "inputs.jsonl")
    held = _module("check_unseen").generated_holdout(cfg)
    assert cfg.data.max_inputs and len(held) == len(inputs) - cfg.data.max_inputs > 0
    assert [r["id"] for r in held] == [r["id"] for r in inputs[cfg.data.max_inputs:]]
    refs = {r["id"]: r for r in _jsonl(EXAMPLE / "references.jsonl")}
    assert all(r[k] == refs[r["id"]][k] for r in held for k in ("name", "email", "phone"))
