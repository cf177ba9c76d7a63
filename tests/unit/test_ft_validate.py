"""Uploaded fine-tuning files are checked as OpenAI checks them: the code and the line in every message."""

from __future__ import annotations

import json

import pytest

from lorapipe.data.formats import read_rows
from lorapipe.serve.ft_validate import FileProblem, check_file

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _file(tmp_path, rows, n_good=10):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(GOOD)] * n_good + [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("row, code, says", [
    ("not json", "invalid_file_format", "line 11: not valid UTF-8 JSON"),
    ([1, 2], "invalid_file_format", "line 11: expected a JSON object, got list"),
    ({"text": "x"}, "invalid_file_format", "line 11: each line needs `messages`"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "invalid_file_format", "messages[0].role must be one of"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "invalid_file_format", "unknown key(s)"),
    ({"messages": [{"role": "user", "content": "x"}]}, "missing_assistant_message", "line 11: no assistant message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
     "missing_assistant_message", "teaches nothing"),
    ({"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
     "invalid_file_format", "weight is only allowed on assistant"),
    ({"prompt": "x", "completion": 3}, "invalid_file_format", "must be strings"),
    ({"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]},
     "exceeds_context_length", "line 11: the example has"),
])
def test_bad_rows_name_their_line_and_code(tmp_path, row, code, says):
    with pytest.raises(FileProblem) as err:
        check_file(_file(tmp_path, [row]), "training_file", lambda m: sum(len(x["content"]) for x in m), 256)
    assert (err.value.code, err.value.param) == (code, "training_file")
    assert says in err.value.message


def test_too_few_examples_and_what_passes(tmp_path):
    count = lambda m: 8  # noqa: E731
    with pytest.raises(FileProblem, match="has 9 example\\(s\\), but must have at least 10") as err:
        check_file(_file(tmp_path, [], n_good=9), "training_file", count, 256)
    assert err.value.code == "invalid_n_examples"
    assert check_file(_file(tmp_path, [], n_good=1), "validation_file", count, 256).examples == 1
    mixed = [{"prompt": "p", "completion": "c"},
             {"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"},
                           {"role": "assistant", "content": "a", "weight": 0}, {"role": "user", "content": "u2"},
                           {"role": "assistant", "content": "b", "weight": 1}]}]
    path = _file(tmp_path, mixed)
    checked = check_file(path, "training_file", count, 256)
    assert (checked.examples, checked.max_tokens) == (12, 8)


def test_lorapipe_rows_keep_weight_and_refuse_a_bad_one(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "u"},
                                             {"role": "assistant", "content": "a", "weight": 0},
                                             {"role": "user", "content": "v"},
                                             {"role": "assistant", "content": "b"}]}) + "\n")
    assert read_rows(path)[0]["messages"][1] == {"role": "assistant", "content": "a", "weight": 0}
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "u"},
                                             {"role": "assistant", "content": "a", "weight": 2}]}) + "\n")
    with pytest.raises(Exception, match="rows.jsonl:1: messages\\[1\\].weight must be 0 or 1"):
        read_rows(path)
