"""Data rows: importers and every bad line reported as file:line: what is wrong."""

from __future__ import annotations

import json

import pytest

from lorapipe.data.formats import read_inputs, read_rows
from lorapipe.errors import DataError


@pytest.mark.parametrize("obj, user, reply", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "hi", "yo"),
    ({"instruction": "Extract", "input": "Ann, a@b.co", "output": "{}"}, "Extract\n\nAnn, a@b.co", "{}"),
    ({"instruction": "Say hi", "output": "hi"}, "Say hi", "hi"),
    ({"prompt": "p", "completion": "c"}, "p", "c"),
])
def test_importers(tmp_path, obj, user, reply):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(obj) + "\n")
    (row,) = read_rows(f, system_prompt="SYS")
    assert row["messages"][0] == {"role": "system", "content": "SYS"}
    assert row["messages"][-2:] == [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    assert row["meta"]["id"] and row["meta"]["source_id"] == row["meta"]["id"]


@pytest.mark.parametrize("line, expected", [
    ('{"messages": [', "d.jsonl:2: not valid JSON"),
    ('[1, 2]', "d.jsonl:2: expected a JSON object, got list"),
    ('{"text": "x"}', "d.jsonl:2: unknown row format (keys: text); use `messages`, alpaca"),
    ('{"messages": []}', "d.jsonl:2: `messages` must be a non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}',
     "d.jsonl:2: messages[0].role must be one of system, user, assistant (got 'bot')"),
    ('{"messages": [{"role": "user", "content": 3}]}', "d.jsonl:2: messages[0].content must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "d.jsonl:2: the last message must be the assistant's reply"),
    ('{"prompt": "p", "completion": 5}', "d.jsonl:2: `prompt` and `completion` must be strings"),
    ('{"instruction": 1, "output": "o"}', "d.jsonl:2: alpaca fields `instruction`, `input`, `output` must be strings"),
])
def test_bad_lines(tmp_path, line, expected):
    good = json.dumps({"prompt": "p", "completion": "c"})
    f = tmp_path / "d.jsonl"
    f.write_text(good + "\n" + line + "\n" + good + "\n")
    with pytest.raises(DataError) as e:
        read_rows(f)
    assert expected in str(e.value)
    assert e.value.exit_code == 2


def test_all_bad_lines_at_once(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "p", "completion": "c"}\nnope\n\n{"x": 1}\n')
    with pytest.raises(DataError) as e:
        read_rows(f)
    assert [p.split(":")[1] for p in e.value.problems] == ["2", "4"]
    assert "2 bad line(s)" in str(e.value)


SCHEMA = {"type": "object", "required": ["name", "email"],
          "properties": {"name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]}}}


@pytest.mark.parametrize("obj, reference, problem", [
    ({"id": 7, "text": "Ann, a@b.co", "name": "Ann", "email": "a@b.co", "extra": 1}, {"name": "Ann", "email": "a@b.co"},
     None),
    ({"text": "hi", "name": None, "email": None}, {"name": None, "email": None}, None),
    ({"text": "hi", "name": "Ann"}, None, "d.jsonl:1: missing the reference field(s) email (task.output_schema)"),
    ({"body": "hi", "name": "Ann", "email": None}, None, "d.jsonl:1: unknown row format (keys: body, email, name)"),
    ({"prompt": "p", "completion": "{}"}, {}, None),  # the row formats still work
])
def test_labelled_inputs_as_a_check_set(tmp_path, obj, reference, problem):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(obj) + "\n")
    if problem:
        with pytest.raises(DataError) as e:
            read_rows(f, "SYS", fields=("text", SCHEMA))
        assert problem in str(e.value)
        return
    (row,) = read_rows(f, "SYS", fields=("text", SCHEMA))
    assert json.loads(row["messages"][-1]["content"]) == reference and row["messages"][0]["content"] == "SYS"
    assert row["meta"]["id"] == str(obj.get("id", row["meta"]["id"]))
    if "text" in obj:
        with pytest.raises(DataError):  # without `fields`, only the row formats are read
            read_rows(f)


@pytest.mark.parametrize("name, content, field, expected", [
    ("in.jsonl", '{"text": "a"}\n{"msg": "b"}\n', "text", "in.jsonl:2: expected an object with a string field `text`"),
    ("in.csv", "msg\nhello\n", "text", "in.csv:1: no column `text` (columns: msg); set data.input_field"),
    ("in.csv", "text\nhello\n\"\"\n", "text", "in.csv:3: empty `text`"),
    ("in.xml", "<a/>", "text", "unsupported inputs format `.xml`; use .jsonl, .csv or .txt"),
    ("in.txt", "\n\n", "text", "no inputs; the file is empty"),
])
def test_bad_inputs(tmp_path, name, content, field, expected):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(DataError) as e:
        read_inputs(f, field)
    assert expected in str(e.value)


@pytest.mark.parametrize("name, content", [
    ("in.jsonl", '{"id": "1", "text": "hello"}\n"world"\n'),
    ("in.csv", "id,text\n1,hello\n,world\n"),
    ("in.txt", "hello\n\nworld\n"),
])
def test_inputs_formats(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content)
    rows = read_inputs(f)
    assert [r["text"] for r in rows] == ["hello", "world"]
    assert rows[0]["id"] != rows[1]["id"]


@pytest.mark.parametrize("reader, name", [(read_inputs, "in.jsonl"), (read_inputs, "in.txt"), (read_inputs, "in.csv"),
                                          (read_rows, "rows.jsonl")])
def test_a_huge_line_is_reported_in_bounded_memory(tmp_path, reader, name):
    """A stray 20 MB line (issue 19) is named as a bad line without ever being held whole."""
    import tracemalloc

    f = tmp_path / name
    head = "text\n" if name.endswith(".csv") else ""
    with open(f, "w", encoding="utf-8") as out:
        out.write(head + '{"text": "ok"}\n' if not head else head + "ok\n")
        out.write('{"text": "' + "x" * (20 << 20) + '"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            reader(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = 3 if head else 2
    assert f"{name}:{line}: line is 20,971,533 bytes, more than data.max_line_bytes (1,048,576)" in str(err.value)
    assert peak < 8 << 20  # a few 1 MiB chunks, not the 20 MB line (nor the GBs parsing it once cost)
    if reader is read_inputs:  # data.max_line_bytes raises the cap
        assert len(reader(f, max_line_bytes=32 << 20)) == 2
