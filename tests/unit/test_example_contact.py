"""The demo recipe's own code: committed data is what make_inputs.py writes, it has the shapes of real
traffic, every label passes the demo's rules, and the python teacher answers every request of the
pipeline with the right label (paraphrases of messages full of other people's values, edge cases)."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from lorapipe.config import load_config
from lorapipe.data.prompts import TeacherPrompt, edge_case_messages, edge_variant, paraphrase_messages

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contact-extraction"
KEYS = ("name", "email", "phone")
MODULES = ("make_inputs", "teacher", "checks", "edge_cases", "message_parts", "message_numbers", "message_phrases",
           "message_mail", "message_other", "message_phones", "message_casual")
EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")


@pytest.fixture(scope="module")
def demo():
    """The recipe's modules, imported as lorapipe imports them: from the recipe's folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        for name in MODULES:
            sys.modules.pop(name, None)
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES[:4]})
        for name in MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def cfg():
    return load_config(EXAMPLE / "pipeline.yaml")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _labelled() -> list[tuple[str, dict]]:
    refs = {r["id"]: {k: r[k] for k in KEYS} for r in _jsonl(EXAMPLE / "references.jsonl")}
    return [(r["text"], refs[r["id"]]) for r in _jsonl(EXAMPLE / "inputs.jsonl")]


def test_committed_inputs_are_what_the_script_writes(demo):
    make = demo.make_inputs.make
    inputs, refs = make(1200, 7)
    assert inputs == _jsonl(EXAMPLE / "inputs.jsonl")
    assert refs == _jsonl(EXAMPLE / "references.jsonl")
    small = make(40, 3)
    assert small == make(40, 3)  # deterministic for a seed
    assert make(60, 3)[0][:40] == small[0]  # message i depends on (seed, i) only
    assert make(40, 4)[0] != small[0]


def test_inputs_have_the_shapes_of_real_traffic(demo, cfg):
    msgs = demo.make_inputs.generate(1200, 7)
    for part in (msgs, msgs[:cfg.data.max_inputs]):  # the demo reads only the first max_inputs
        assert sum(m.fields <= 1 for m in part) >= 0.2 * len(part)
        assert sum(m.fields == 0 for m in part) >= 0.05 * len(part)
        assert sum(m.fields == 3 for m in part) >= 0.15 * len(part)
    kinds, langs = Counter(m.kind for m in msgs), Counter(m.lang for m in msgs)
    assert set(kinds) == set(demo.make_inputs.KINDS) and min(kinds.values()) >= 0.01 * len(msgs)
    assert len(langs) >= 8 and min(langs.values()) >= 0.02 * len(msgs)
    # other people's addresses in the message, numbers that are not phones, honorifics kept out of the label
    others = [m for m in msgs if set(EMAIL.findall(m.text)) - {m.label["email"]}]
    assert len(others) >= 0.25 * len(msgs)
    assert sum(bool(re.search(r"\d{2}[./-]\d{2}|#\d{4}|\d{5}", m.text)) for m in msgs) >= 0.4 * len(msgs)
    honorific = r"(Dr\.?|Mr\.|Mrs\.|Ms\.|Frau|Herr|Monsieur|Mme|Sr\.|Pan) "
    titled = [m for m in msgs if m.label["name"] and re.search(honorific + re.escape(m.label["name"]), m.text)]
    assert len(titled) >= 0.03 * len(msgs)
    assert max(len(m.text) for m in msgs) <= max(demo.make_inputs.MAX_CHARS.values())


def test_phones_addresses_and_names_come_in_the_forms_the_adapter_missed(demo, cfg):
    """Issue 17b: national numbers in running text or bare under a name, addresses unlike the name, names
    with particles or apostrophes; phones not rarer than numbers that are not phones."""
    mi = demo.make_inputs
    msgs = mi.generate(1200, 7)
    for part in (msgs, msgs[:max(cfg.data.max_inputs, mi.FIRST)]):
        n = len(part)
        phones = [m for m in part if m.label["phone"]]
        places = Counter(mi.phone_place(m.text, m.label["phone"]) for m in phones)
        assert sum(mi.national(m.label["phone"]) for m in phones) >= 0.6 * len(phones)
        assert places["sentence"] >= 0.3 * len(phones) and places["bare"] >= 0.05 * len(phones)
        assert len(phones) >= sum(mi.distractor(m) for m in part) >= 0.3 * n
        assert sum(not mi.distractor(m) for m in phones) >= 0.15 * n  # the phone is the only number
        mails = [m for m in part if m.label["email"]]
        assert sum(mi.local_differs(m) for m in mails) >= 0.5 * len(mails)
        assert sum(m.label["email"] != m.label["email"].lower() for m in mails) >= 0.05 * len(mails)
        names = [m.label["name"] for m in part if m.label["name"]]
        assert sum(bool(re.search(r"\b(van|von|de|del|da|dos|zur|ter|Mac|Mc)\b|'|\w-\w", nm)) for nm in names) \
            >= 0.15 * len(names)


def test_unseen_messages_stay_a_measure():
    """unseen.jsonl is a check set (evaluate.extra_sets): labelled, and none of it is in the generated data."""
    unseen = _jsonl(EXAMPLE / "unseen.jsonl")
    generated = "\n".join(t for t, _ in _labelled())
    assert len(unseen) >= 50 and len({r["id"] for r in unseen}) == len(unseen)
    for r in unseen:
        assert set(r) == {"id", "text", "name", "email", "phone"}
        assert all(r[k] is None or r[k] in r["text"] for k in KEYS), r["id"]
        assert r["text"] not in generated
        assert all(r[k] is None or r[k] not in generated for k in ("email", "phone")), r["id"]
        assert r["name"] is None or " " not in r["name"] or r["name"] not in generated, r["id"]


def test_every_label_passes_the_demo_rules(demo, cfg):
    """References, edge cases and the check set pass the demo's score rules (json_schema, grounding, checks.py)."""
    from lorapipe.data.rubric import RuleChecker

    checker = RuleChecker(cfg)
    edge = [demo.edge_cases.edge_case(cat, k) for cat, quota in cfg.augment.edge_cases.items() for k in range(quota)]
    unseen = [(r["text"], {k: r[k] for k in KEYS}) for r in _jsonl(EXAMPLE / "unseen.jsonl")]
    for text, label in _labelled() + edge + unseen:
        compliant, score, reasons = checker.check(text, json.dumps(label, ensure_ascii=False))
        assert compliant and score == 5.0, (text, reasons)


TEXT = ("To: bo.kim@example.com\nCc: Cy Ray <cy.ray@example.com>\n\nHi Bo,\n\nSounds good, order 4471-2209 is fine. "
        "Room 512, ext. 4410.\n\nThanks,\nDr. Ann Lee\nann at lee dot org\nT: +44 20 7946 0321\n\n"
        "On 3 May, Bo Kim <bo.kim@example.com> wrote:\n> Call me on 0161 496 0784.")


@pytest.mark.parametrize("output, problem", [
    ({"name": "Dr. Ann Lee"}, "starts with an honorific"),
    ({"email": "ann at lee dot org"}, "is not an e-mail address as written"),
    ({"email": "cy.ray@example.com"}, "appears only on To/Cc/Bcc lines"),
    ({"phone": "0161 496 0784"}, "appears only in a quoted or forwarded part"),
    ({"phone": "20 7946 0321"}, "only part of what the message writes there"),
    ({"phone": "4471-2209"}, "is written as an order, invoice, account or tracking number"),
    ({"phone": "ext. 4410"}, "does not look like a phone number"),
    ({"name": "Ann Le"}, "only part of what the message writes there"),
    ({"name": "Bob"}, "not copied from the message"),
    ({"phone": "+442079460321"}, "not copied from the message"),
])
def test_checks_refuse_what_a_correct_label_never_is(demo, output, problem):
    score, reason = demo.checks.contact_fields(TEXT, json.dumps({**dict.fromkeys(KEYS), **output}))
    assert score == 0.0 and problem in reason


@pytest.mark.parametrize("output, ok", [
    ({"name": "Ann Lee", "email": None, "phone": "+44 20 7946 0321"}, True),
    ({"name": None, "email": None, "phone": None}, True),  # nothing is required: a notification has no contact
    ("Sure! Here is the JSON", False),
    ({"name": "Ann Lee", "email": None}, False),
])
def test_checks_accept_nulls_and_reject_malformed_output(demo, output, ok):
    out = output if isinstance(output, str) else json.dumps(output)
    assert (demo.checks.contact_fields(TEXT, out)[0] == 5.0) is ok


def test_teacher_answers_paraphrases_of_messages_with_other_peoples_values(demo, cfg):
    prompt = TeacherPrompt.from_config(cfg)
    crowded = [(t, lab) for t, lab in _labelled() if set(EMAIL.findall(t)) - {lab["email"]}]
    assert len(crowded) > 250
    for i, (text, label) in enumerate(crowded):
        rewritten = demo.teacher.answer(paraphrase_messages(cfg.task, text, i % 2))
        assert rewritten != text
        assert all(v is None or v in rewritten for v in label.values())
        assert json.loads(demo.teacher.answer(prompt.messages(rewritten))) == label, rewritten


def test_teacher_writes_labelled_edge_cases_it_can_answer_later(demo, cfg):
    prompt = TeacherPrompt.from_config(cfg)
    inputs = {t for t, _ in _labelled()}
    written: dict[str, dict] = {}
    for cat, quota in cfg.augment.edge_cases.items():
        for k in range(quota):
            msgs = edge_case_messages(cfg.task, cat, k, examples=["Hi, Ann here."])
            purpose = {"step": "edge_case", "category": cat, "variant": edge_variant(cat, k)[0], "index": k}
            text = demo.teacher.answer(msgs)  # category and case number read from the prompt alone
            assert text == demo.teacher.answer(msgs, purpose=purpose)
            assert text not in inputs and text not in written
            written[text] = demo.edge_cases.edge_case(cat, k)[1]
    demo.teacher._written.clear()  # a later process: the writing calls were replayed from the response cache
    for text, label in written.items():
        assert json.loads(demo.teacher.answer(prompt.messages(text))) == label, text
    labels = list(written.values())
    assert sum(not any(lab.values()) for lab in labels) >= 5  # nothing to find
    assert any("previous instructions" in t for t in written) and any(" dot " in t for t in written)
    assert json.loads(demo.teacher.answer(prompt.messages("Totally new text, Ann, +1 555 201 3344."))) == \
        dict.fromkeys(KEYS)


def test_the_demo_teacher_runs_the_augment_stage(demo, cfg, tmp_path):
    """Paraphrases and every edge-case quota of pipeline.yaml are written, answered and accepted by the rules."""
    from lorapipe.data import augment
    from lorapipe.data.formats import make_row, read_jsonl
    from lorapipe.llm import PythonLLM

    rows = [make_row(cfg.task.system_prompt, t, json.dumps(lab, ensure_ascii=False), source_id=f"s{i}",
                     origin="teacher", score=5.0) for i, (t, lab) in enumerate(_labelled()[:40])]
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    teacher = PythonLLM(cfg.teacher.model_copy(update={"cache": False}), search_path=EXAMPLE)
    m = augment.run(cfg, teacher, None, tmp_path / "scored.jsonl", tmp_path / "aug")
    assert m.metrics["paraphrases"] == {"requested": 40, "accepted": 40}
    assert m.metrics["edge_cases"] == {c: {"quota": q, "accepted": q} for c, q in cfg.augment.edge_cases.items()}
    assert read_jsonl(tmp_path / "aug" / "rejected.jsonl") == []
