"""Check an uploaded training or validation file as OpenAI's fine-tuning does, before a job is queued.

Accepted rows (one JSON object per line)::

    {"messages": [{"role": "system"|"developer"|"user"|"assistant", "content": str, "name"?: str,
                   "weight"?: 0|1 (assistant turns only; 0 = no loss on that turn)}, ...]}
    {"prompt": str, "completion": str}

A failed check becomes the job's ``error`` ``{code, message, param}``; every message names the line:

=========================  =====================================================================
code                       cause
=========================  =====================================================================
invalid_file_format        not UTF-8 JSON objects, unknown keys or roles, bad content or weight
missing_assistant_message  no assistant turn with weight 1 (nothing to learn), or not last
exceeds_context_length     an example longer than the base model's context
invalid_n_examples         fewer than 10 training examples (validation: at least 1)
=========================  =====================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_TRAIN_EXAMPLES = 10
MAX_LISTED = 5  # problems named in one error message
ROW_KEYS = {"messages"}
MESSAGE_KEYS = {"role", "content", "name", "weight"}
ROLES = ("system", "developer", "user", "assistant")


class FileProblem(Exception):
    """A file a job cannot train on; ``code`` and ``param`` as OpenAI reports them."""

    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass
class Checked:
    examples: int
    max_tokens: int
    total_tokens: int


def _messages_problem(messages: Any) -> tuple[str, str] | None:
    """(code, problem) of one row's ``messages``, or None when it is fine."""
    if not isinstance(messages, list) or not messages:
        return "invalid_file_format", "`messages` must be a non-empty list"
    learnable = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return "invalid_file_format", f"messages[{i}] must be an object with `role` and `content`"
        if unknown := sorted(set(m) - MESSAGE_KEYS):
            return "invalid_file_format", (f"messages[{i}] has unknown key(s) {', '.join(unknown)}; allowed: "
                                           f"{', '.join(sorted(MESSAGE_KEYS))} (tool calls are not supported)")
        if m.get("role") not in ROLES:
            return "invalid_file_format", (f"messages[{i}].role must be one of {', '.join(ROLES)} "
                                           f"(got {m.get('role')!r})")
        if not isinstance(m.get("content"), str):
            return "invalid_file_format", f"messages[{i}].content must be a string"
        if "weight" in m:
            if m["role"] != "assistant":
                return "invalid_file_format", f"messages[{i}].weight is only allowed on assistant messages"
            if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                return "invalid_file_format", f"messages[{i}].weight must be 0 or 1 (got {m['weight']!r})"
        learnable = learnable or (m["role"] == "assistant" and m.get("weight", 1) == 1)
    if not learnable:
        return "missing_assistant_message", "no assistant message with weight 1: the example teaches nothing"
    if messages[-1]["role"] != "assistant":
        return "missing_assistant_message", "the last message must be the assistant's reply"
    if not any(m["role"] == "user" for m in messages):
        return "invalid_file_format", "there must be a user message"
    return None


def row_problem(obj: Any) -> tuple[str, str] | None:
    """(code, problem) of one parsed line, or None."""
    if not isinstance(obj, dict):
        return "invalid_file_format", f"expected a JSON object, got {type(obj).__name__}"
    if "messages" in obj:
        if unknown := sorted(set(obj) - ROW_KEYS):
            return "invalid_file_format", f"unknown key(s) {', '.join(unknown)} (tools and functions are not supported)"
        return _messages_problem(obj["messages"])
    if "prompt" in obj or "completion" in obj:
        if set(obj) != {"prompt", "completion"}:
            return "invalid_file_format", "a prompt/completion row has exactly the keys `prompt` and `completion`"
        if not (isinstance(obj["prompt"], str) and isinstance(obj["completion"], str)):
            return "invalid_file_format", "`prompt` and `completion` must be strings"
        return None
    return "invalid_file_format", "each line needs `messages` (chat) or `prompt` and `completion`"


def as_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """A checked row as lorapipe's canonical messages (``developer`` is ``system``; ``weight`` kept)."""
    if "messages" in obj:
        return [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"],
                 **({"weight": m["weight"]} if "weight" in m else {})} for m in obj["messages"]]
    return [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]


def check_file(path: Path, param: str, count_tokens: Callable[[list[dict[str, Any]]], int],
               max_context: int) -> Checked:
    """Check every line of ``path``; raise :class:`FileProblem` naming the first few bad lines."""
    what = "Training" if param == "training_file" else "Validation"
    problems: list[tuple[str, str]] = []
    n = longest = total = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                problems.append(("invalid_file_format", f"line {lineno}: not valid UTF-8 JSON ({e})"))
                continue
            found = row_problem(obj)
            if found is not None:
                problems.append((found[0], f"line {lineno}: {found[1]}"))
                continue
            tokens = count_tokens(as_messages(obj))
            if tokens > max_context:
                problems.append(("exceeds_context_length", f"line {lineno}: the example has {tokens} tokens; "
                                 f"the base model's context is {max_context}. Shorten or split it"))
                continue
            n += 1
            longest, total = max(longest, tokens), total + tokens
    if problems:
        listed = "; ".join(p for _, p in problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise FileProblem(problems[0][0], f"{what} file has {len(problems)} invalid example(s): {listed}{more}",
                          param)
    least = MIN_TRAIN_EXAMPLES if param == "training_file" else 1
    if n < least:
        raise FileProblem("invalid_n_examples", f"{what} file has {n} example(s), but must have at least {least} "
                          "examples", param)
    return Checked(n, longest, total)


__all__ = ["MIN_TRAIN_EXAMPLES", "Checked", "FileProblem", "as_messages", "check_file", "row_problem"]
