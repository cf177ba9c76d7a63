"""Data rows: the canonical chat row, importers, and raw-input readers.

The canonical row is OpenAI chat format plus provenance::

    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "meta": {"id": str, "source_id": str, "origin": "teacher"|"paraphrase"|"edge:short"|...,
              "score": float, "subscores": {...}, "rationale": str}}

Alpaca rows (``instruction``/``input``/``output``) and ``prompt``/``completion`` rows are converted on
read. Every bad line is reported as ``file:line: what is wrong``, all of them at once; nothing is
silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

from lorapipe.errors import DataError
from lorapipe.textfiles import DEFAULT_MAX_LINE_BYTES, read_lines

ROLES = ("system", "user", "assistant")


class Message(TypedDict):
    role: str  # system | user | assistant
    content: str


class Row(TypedDict):
    """The canonical data row: OpenAI chat messages plus provenance (``meta``: id, source_id, origin,
    and after scoring score, subscores, rationale, reasons). Every stage reads and writes these."""

    messages: list[Message]
    meta: dict[str, Any]


def row_id(*parts: str) -> str:
    """A stable id from content, so the same input always gets the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def make_row(system: str | None, user: str, assistant: str, **meta: Any) -> Row:
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    meta.setdefault("id", row_id(user, assistant))
    meta.setdefault("source_id", meta["id"])
    meta.setdefault("origin", "file")
    return {"messages": messages, "meta": meta}


def user_text(row: Row | dict[str, Any]) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def assistant_text(row: Row | dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant")


def _validate_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object with `role` and `content`"
        if m.get("role") not in ROLES:
            return f"messages[{i}].role must be one of {', '.join(ROLES)} (got {m.get('role')!r})"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content must be a string"
        if "weight" in m and (m["role"] != "assistant" or m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
            return f"messages[{i}].weight must be 0 or 1, on an assistant message (0: no loss on that reply)"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's reply (the training target)"
    if not any(m["role"] == "user" for m in messages):
        return "there must be a user message"
    return None


def normalize_row(obj: Any, system_prompt: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Turn one parsed JSON object into a canonical row; return (row, None) or (None, problem)."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        return None, "`meta` must be an object"
    if "messages" in obj:
        problem = _validate_messages(obj["messages"])
        if problem:
            return None, problem
        # `weight` 0 on an assistant reply (OpenAI's format): the reply is context, not a target
        messages = [{"role": m["role"], "content": m["content"], **({"weight": m["weight"]} if "weight" in m else {})}
                    for m in obj["messages"]]
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
    elif "instruction" in obj and "output" in obj:
        if not all(isinstance(obj.get(k, ""), str) for k in ("instruction", "input", "output")):
            return None, "alpaca fields `instruction`, `input`, `output` must be strings"
        user = obj["instruction"] + (("\n\n" + obj["input"]) if obj.get("input") else "")
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": user}, {"role": "assistant", "content": obj["output"]}]
    elif "prompt" in obj and "completion" in obj:
        if not (isinstance(obj["prompt"], str) and isinstance(obj["completion"], str)):
            return None, "`prompt` and `completion` must be strings"
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    else:
        keys = ", ".join(sorted(obj)) or "none"
        return None, (f"unknown row format (keys: {keys}); use `messages`, alpaca "
                      "`instruction`/`input`/`output`, or `prompt`/`completion`")
    row = {"messages": messages, "meta": dict(meta)}
    user = next(m["content"] for m in messages if m["role"] == "user")
    row["meta"].setdefault("id", row_id(user, messages[-1]["content"]))
    row["meta"].setdefault("source_id", row["meta"]["id"])
    row["meta"].setdefault("origin", "file")
    return row, None


def fields_row(obj: dict[str, Any], input_field: str, output_schema: dict[str, Any],
               system_prompt: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """A labelled input as a canonical row: ``obj[input_field]`` is the input and the schema's
    top-level properties (those in ``obj``; a required one must be there) are the reference JSON."""
    props = list(output_schema.get("properties") or {})
    if not isinstance(obj.get(input_field), str) or not props:
        return None, (f"expected `messages`, alpaca or prompt/completion, or the input field `{input_field}` "
                      "with the output schema's properties as the reference")
    if missing := [k for k in output_schema.get("required", props) if k not in obj]:
        return None, f"missing the reference field(s) {', '.join(missing)} (task.output_schema)"
    reference = json.dumps({k: obj[k] for k in props if k in obj}, ensure_ascii=False)
    meta = {"id": str(obj["id"])} if obj.get("id") is not None else {}
    return normalize_row({"prompt": obj[input_field], "completion": reference, "meta": meta}, system_prompt)


def _json_lines(path: Path, max_line_bytes: int, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for each non-blank line; bad lines go to ``problems`` as ``file:line: why``."""
    for n, line, problem in read_lines(path, max_line_bytes):
        if problem is None and line is not None and not line.strip():
            continue
        if problem is None:
            try:
                yield n, json.loads(line)
                continue
            except json.JSONDecodeError as e:
                problem = f"not valid JSON: {e.msg} (column {e.colno})"
        problems.append(f"{path}:{n}: {problem}")


def read_rows(path: str | Path, system_prompt: str | None = None,
              max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
              fields: tuple[str, dict[str, Any] | None] | None = None) -> list[Row]:
    """Read chat/alpaca/prompt-completion JSONL; raise :class:`DataError` listing every bad line.

    ``fields`` = (input field, output schema) also accepts labelled inputs (:func:`fields_row`), as a
    check set (``evaluate.extra_sets``) may hold them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for n, obj in _json_lines(path, max_line_bytes, problems):
        row, problem = normalize_row(obj, system_prompt)
        if problem and fields and fields[1] is not None and isinstance(obj, dict) and fields[0] in obj:
            row, problem = fields_row(obj, fields[0], fields[1], system_prompt)
        if problem:
            problems.append(f"{path}:{n}: {problem}")
        else:
            rows.append(row)
    if problems:
        raise DataError(f"{path}: {len(problems)} bad line(s); fix them and run again:", problems)
    if not rows:
        raise DataError(f"{path}: no rows; the file is empty")
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Plain JSONL reader for lorapipe's own intermediate files."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON: {e.msg}") from None
    return rows


def _text_lines(path: Path, max_line_bytes: int, problems: list[str]) -> Iterator[str]:
    """The decoded lines of ``path``; lines that cannot be read go to ``problems`` instead."""
    for n, line, problem in read_lines(path, max_line_bytes):
        if problem is not None:
            problems.append(f"{path}:{n}: {problem}")
        elif line is not None:
            yield line


def read_inputs(path: str | Path, field: str = "text",
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[dict[str, str]]:
    """Read raw inputs from .jsonl (``field``), .csv (column ``field``) or .txt (one per line).

    Returns ``[{"id": ..., "text": ...}]``; ids come from an ``id`` field/column when present.
    Files are UTF-8; a line over ``max_line_bytes`` (``data.max_line_bytes``) is reported, not read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: inputs file not found (data.inputs)")
    out: list[dict[str, str]] = []
    problems: list[str] = []
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for n, obj in _json_lines(path, max_line_bytes, problems):
            if isinstance(obj, str):
                obj = {field: obj}
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                problems.append(f"{path}:{n}: expected an object with a string field `{field}` "
                                "(set data.input_field to the field that holds the input)")
                continue
            out.append({"id": str(obj.get("id") or row_id(obj[field])), "text": obj[field]})
    elif suffix == ".csv":
        reader = csv.DictReader(_text_lines(path, max_line_bytes, problems))
        if field not in (reader.fieldnames or []):
            if problems:  # the header line itself could not be read
                raise DataError(f"{path}: {len(problems)} bad line(s); fix them and run again:", problems)
            raise DataError(f"{path}:1: no column `{field}` (columns: {', '.join(reader.fieldnames or [])}); "
                            "set data.input_field")
        if csv.field_size_limit() < max_line_bytes:  # a field may be as long as a line may
            csv.field_size_limit(max_line_bytes)
        try:
            for rec in reader:
                text = rec.get(field)
                if not text or not text.strip():
                    problems.append(f"{path}:{reader.line_num}: empty `{field}`")
                    continue
                out.append({"id": str(rec.get("id") or row_id(text)), "text": text})
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    elif suffix == ".txt":
        for line in _text_lines(path, max_line_bytes, problems):
            if line.strip():
                text = line.rstrip("\n")
                out.append({"id": row_id(text), "text": text})
    else:
        raise DataError(f"{path}: unsupported inputs format `{suffix}`; use .jsonl, .csv or .txt")
    if problems:
        raise DataError(f"{path}: {len(problems)} bad line(s); fix them and run again:", problems)
    if not out:
        raise DataError(f"{path}: no inputs; the file is empty")
    return out
