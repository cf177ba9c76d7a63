"""Error analysis of JSON answers: the miss taxonomy, per-field exact match, the worst examples."""

from __future__ import annotations

import json

import pytest

from lorapipe.evaluate import analysis

MSG = "Hi Bo, call Ann on +34 612 345 678 or mail ann@x.com. Room 4.12 at 10:30. Ann Lee"


@pytest.mark.parametrize("name, want, got, kind", [
    ("equal", "Ann Lee", "Ann Lee", None),
    ("both null", None, None, None),
    ("null for a value", "ann@x.com", None, "missed"),
    ("case only", "ann@x.com", "ANN@X.COM", "miscopied"),
    ("honorific kept", "Ann Lee", "Dr. Ann Lee", "miscopied"),
    ("first digits dropped", "+34 612 345 678", "612 345 678", "miscopied"),
    ("digits dropped, not in the input", "+34 612 345 678", "+34 612 345", "miscopied"),
    ("one character off", "ann@x.com", "anm@x.com", "miscopied"),
    ("someone else in the input", "Ann Lee", "Bo", "wrong_entity"),
    ("a room number for a phone", "+34 612 345 678", "4.12", "wrong_entity"),
    ("a value where the reference is null", None, "10:30", "wrong_entity"),
    ("made up", "ann@x.com", "info@company.org", "invented"),
    ("made up where the reference is null", None, "555-0100", "invented"),
    ("number field made up", 3, 7, "invented"),
])
def test_classify(name, want, got, kind):
    assert analysis.classify(MSG, want, got) == kind, name


@pytest.mark.parametrize("name, output, expected", [
    ("right", '{"name": "Ann Lee", "email": "ann@x.com"}', {"name": None, "email": None}),
    ("fenced", '```json\n{"name": "Ann Lee", "email": null}\n```', {"name": None, "email": "missed"}),
    ("field left out", '{"name": "Ann Lee"}', {"name": None, "email": "missed"}),
    ("not JSON", "Sure! The contact is Ann.", {"name": "invalid", "email": "invalid"}),
    ("a list, not an object", '["Ann Lee"]', {"name": "invalid", "email": "invalid"}),
])
def test_compare_fields(name, output, expected):
    ref = {"name": "Ann Lee", "email": "ann@x.com"}
    assert analysis.compare_fields(MSG, ref, output) == expected, name


def test_nested_objects_are_compared_by_path():
    ref = {"person": {"name": "Ann Lee", "city": None}, "tags": ["a", "b"]}
    out = json.dumps({"person": {"name": "Bo", "city": "Madrid"}, "tags": ["a"]})
    assert analysis.compare_fields(MSG, ref, out) == {"person.name": "wrong_entity", "person.city": "invented",
                                                      "tags": "invented"}


def test_analyse_counts_per_field_and_keeps_the_worst_examples_first():
    refs = [json.dumps({"name": "Ann Lee", "phone": "+34 612 345 678"})] * 4
    outs = ['{"name": "Ann Lee", "phone": "+34 612 345 678"}',   # right
            '{"name": "Bo", "phone": "4.12"}',                   # two wrong entities
            '{"name": "Ann Lee", "phone": null}',                # missed
            "no json"]                                           # invalid
    a = analysis.analyse([MSG] * 4, refs, outs, ids=["a", "b", "c", "d"], n_worst=1)
    assert a["n"] == 4 and a["invalid"] == 1
    assert a["per_field"]["name"] == {"exact": 0.5, "invented": 0, "missed": 0, "miscopied": 0, "wrong_entity": 1,
                                      "invalid": 1}
    assert a["per_field"]["phone"]["exact"] == 0.25
    assert a["misses"] == {"invented": 0, "missed": 1, "miscopied": 0, "wrong_entity": 2}
    worst = a["worst"]["wrong_entity"]
    assert len(worst) == 1 and worst[0]["id"] == "b" and worst[0]["wrong_fields"] == 2
    assert (worst[0]["field"], worst[0]["reference"], worst[0]["output_value"]) == ("name", "Ann Lee", "Bo")
    assert a["worst"]["missed"][0]["id"] == "c" and a["worst"]["invented"] == []


def test_analyse_is_only_for_json_references():
    assert analysis.analyse(["x"], ["plain text answer"], ["plain text answer"]) is None
    assert analysis.analyse([], [], []) is None


def test_field_table_markdown_has_a_column_per_arm():
    refs, outs = [json.dumps({"name": "Ann Lee"})], ['{"name": "Bo"}']
    a = {"base": analysis.analyse([MSG], refs, outs), "tuned": analysis.analyse([MSG], refs, refs)}
    lines = analysis.field_table_markdown(a, {"base": "base + prompt", "tuned": "tuned"})
    assert lines[0] == "| field | base + prompt | tuned |" and "| name | 0% | 100% |" in lines
    assert "| wrong entity (a different value that is in the input) | 1 | 0 |" in lines
