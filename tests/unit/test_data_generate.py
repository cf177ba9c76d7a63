"""Generate stage: rows and provenance, teacher-written inputs, failures, and resuming after a crash."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from data_fakes import INPUTS, FakeLLM, contact_teacher, extract, make_cfg, prompt_kind, read_jsonl

from lorapipe.data import generate
from lorapipe.data.formats import assistant_text, user_text
from lorapipe.data.journal import Journal
from lorapipe.errors import DataError
from lorapipe.llm.base import Completion


def test_rows_samples_and_provenance(tmp_path):
    cfg = make_cfg(tmp_path, generate={"samples_per_input": 2})
    teacher = FakeLLM()
    m = generate.run(cfg, teacher, tmp_path / "gen")
    rows = read_jsonl(tmp_path / "gen" / "generated.jsonl")
    inputs = read_jsonl(tmp_path / "gen" / "inputs.jsonl")
    assert [user_text(r) for r in rows] == [t for t in INPUTS for _ in range(2)]
    assert all(assistant_text(r) == extract(user_text(r)) for r in rows)
    assert rows[0]["messages"][0] == {"role": "system", "content": cfg.task.system_prompt}
    assert [r["meta"]["origin"] for r in rows] == ["teacher"] * 12
    assert [r["meta"]["source_id"] for r in rows] == [i["id"] for i in inputs for _ in range(2)]
    assert len({r["meta"]["id"] for r in rows}) == 12
    assert [r.sample_index for r in teacher.requests] == [0, 1] * 6
    assert teacher.requests[0].temperature == cfg.teacher.temperature
    assert m.metrics == {"inputs": 6, "inputs_from_file": 6, "inputs_written": 0, "duplicate_inputs_dropped": 0,
                         "samples_per_input": 2, "requests": 12, "rows": 12, "failed": 0}
    assert m.extra["teacher"] == {"kind": "fake", "model": "fake"} and m.extra["teacher_usage"]["calls"] == 12
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["generated.jsonl", "inputs.jsonl", "manifest.json"]


def test_max_inputs_and_duplicate_inputs(tmp_path):
    cfg = make_cfg(tmp_path, inputs=[INPUTS[0], INPUTS[1], INPUTS[0], INPUTS[2]], data={"max_inputs": 3})
    m = generate.run(cfg, FakeLLM(), tmp_path / "gen")
    assert (m.metrics["inputs"], m.metrics["duplicate_inputs_dropped"], m.metrics["rows"]) == (2, 1, 2)


@pytest.mark.parametrize("inputs, message", [
    ([{"id": "a", "text": "one"}, {"id": "a", "text": "two"}],
     ("generate inputs: 1 input id(s) reused; give every input its own id:\n  generate inputs: id `a` is used for "
      "two different inputs")),
    ([], "generate: no inputs; set `data.inputs` (a .jsonl/.csv/.txt file) or `generate.n_inputs`"),
])
def test_bad_inputs(tmp_path, inputs, message):
    cfg = make_cfg(tmp_path)
    with pytest.raises(DataError) as e:
        generate.run(cfg, FakeLLM(), tmp_path / "gen", inputs=inputs)
    assert message in str(e.value)


def test_teacher_writes_deduplicated_inputs(tmp_path):
    # The writer repeats itself every third answer; generate asks again until it has n distinct inputs.
    def respond(req):
        if prompt_kind(req) == "writer":
            n = int(req.messages[-1]["content"].split("input number ")[1].split(";")[0])
            k = n if n % 3 else 1
            return f"```\nHello, Hal Ito here, mail hal{k}@ito.com\n```"
        return contact_teacher(req)

    cfg = make_cfg(tmp_path, inputs=None, generate={"n_inputs": 5, "seed_inputs": INPUTS[:2]})
    teacher = FakeLLM(respond)
    m = generate.run(cfg, teacher, tmp_path / "gen")
    texts = [i["text"] for i in read_jsonl(tmp_path / "gen" / "inputs.jsonl")]
    assert len(texts) == 5 and len(set(texts)) == 5 and not any("```" in t for t in texts)
    assert m.metrics["inputs_written"] == 5 and m.metrics["duplicate_inputs_dropped"] >= 1
    writer = [r for r in teacher.requests if prompt_kind(r) == "writer"]
    assert INPUTS[0] in writer[0].messages[-1]["content"]
    assert len({r.sample_index for r in writer}) == len(writer)
    origins = Counter(i["origin"] for i in read_jsonl(tmp_path / "gen" / "inputs.jsonl"))
    assert origins == {"teacher": 5}


def test_teacher_failures_are_recorded_then_retried(tmp_path):
    cfg = make_cfg(tmp_path)

    def flaky(req):
        if INPUTS[2] in req.messages[-1]["content"]:
            return Completion(text="", error="HTTP 503: overloaded (after 5 retries)")
        return contact_teacher(req)

    m = generate.run(cfg, FakeLLM(flaky), tmp_path / "gen")
    [failed] = read_jsonl(tmp_path / "gen" / "failed.jsonl")
    assert failed["input"] == INPUTS[2] and failed["error"] == "HTTP 503: overloaded (after 5 retries)"
    assert (m.metrics["rows"], m.metrics["failed"]) == (5, 1)
    assert (tmp_path / "gen" / "generate.partial.jsonl").exists()  # kept so a rerun retries only the failure
    healthy = FakeLLM()
    m2 = generate.run(cfg, healthy, tmp_path / "gen")
    assert len(healthy.requests) == 1 and INPUTS[2] in healthy.requests[0].messages[-1]["content"]
    assert (m2.metrics["rows"], m2.metrics["failed"]) == (6, 0)
    assert [user_text(r) for r in read_jsonl(tmp_path / "gen" / "generated.jsonl")] == INPUTS
    assert not (tmp_path / "gen" / "failed.jsonl").exists()
    assert not (tmp_path / "gen" / "generate.partial.jsonl").exists()


@pytest.mark.parametrize("cut", [0, 1, 7], ids=["clean-kill", "torn-newline", "torn-line"])
def test_resume_after_crash_loses_and_duplicates_nothing(tmp_path, cut):
    """Crash mid-run, tear the journal's last line (a kill during the write), rerun."""
    inputs = [f"Message {i} from Person{i} Lastname at p{i}@mail.org" for i in range(50)]
    cfg = make_cfg(tmp_path, inputs=inputs, generate={"samples_per_input": 2})
    crashing = FakeLLM(stop_after=70)  # batches of 16: 64 answers journaled, 6 in flight are lost
    with pytest.raises(KeyboardInterrupt):
        generate.run(cfg, crashing, tmp_path / "gen")
    journal = tmp_path / "gen" / "generate.partial.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - cut])
    survived = 64 - (1 if cut else 0)

    teacher = FakeLLM()
    m = generate.run(cfg, teacher, tmp_path / "gen")
    rows = read_jsonl(tmp_path / "gen" / "generated.jsonl")
    assert m.extra["resumed"] == survived
    assert len(teacher.requests) == 100 - survived  # only what is missing is asked
    keys = Counter((user_text(r), r["meta"]["sample"]) for r in rows)
    assert len(rows) == 100 and set(keys.values()) == {1}  # 0 lost, 0 duplicated
    assert all(assistant_text(r) == extract(user_text(r)) for r in rows)
    asked_twice = Counter(json.dumps([r.messages, r.sample_index]) for r in crashing.requests[:survived]
                          + teacher.requests)
    assert max(asked_twice.values()) == 1  # nothing already journaled was asked again


def test_journal_from_another_config_is_discarded(tmp_path):
    path = tmp_path / "x.partial.jsonl"
    Journal(path, "config-A").append([{"k": "a", "text": "1"}])
    assert Journal(path, "config-A").entries == {"a": {"k": "a", "text": "1"}}
    fresh = Journal(path, "config-B")
    assert fresh.entries == {} and fresh.resumed == 0
    assert path.read_text().splitlines() == ['{"journal": "config-B"}']
