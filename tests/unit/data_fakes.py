"""Scripted teacher/judge and a contact-extraction config for the data-stage tests.

:class:`FakeLLM` implements the ``lorapipe.llm.base.LLM`` protocol: each request is answered by a
``respond(request) -> str | Completion`` function and logged in ``requests``; ``stop_after`` raises
``KeyboardInterrupt`` once that many requests were answered (a crash in the middle of a stage).
:func:`contact_teacher` plays a perfect teacher for the contact task, whatever the prompt kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.llm.base import ChatRequest, Completion, Usage

SCHEMA = {"type": "object", "required": ["name", "email"], "additionalProperties": False,
          "properties": {"name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]}}}

INPUTS = [
    "Hi, I'm Ann Lee, write to ann.lee@example.com about the invoice.",
    "Bob Stone here. Reach me at bob@stone.io for the quote.",
    "Please contact Carla Diaz (carla.diaz@mail.org) regarding the delivery.",
    "This is Dan Wu; my address is dan.wu@corp.net, thanks!",
    "Greetings from Eve Park, eve.park@park.dev, about tomorrow's meeting.",
    "Frank Moe asks you to email frank@moe.com before Friday.",
]


def make_cfg(tmp_path: Path, inputs: list[str] | None = INPUTS, **sections: Any) -> PipelineConfig:
    """A validated contact-extraction config rooted at ``tmp_path`` (inputs written to inputs.jsonl)."""
    data: dict[str, Any] = {
        "task": {"name": "contacts", "description": "Extract the contact's name and e-mail address from a message.",
                 "system_prompt": "Return the sender's name and e-mail as JSON.",
                 "format_spec": 'A JSON object {"name": string|null, "email": string|null}.',
                 "quality_criteria": ["The name and e-mail are exactly those in the message."],
                 "negative_criteria": ["Invent a value that is not in the message."],
                 "output_schema": SCHEMA},
        "teacher": {"kind": "python", "function": "fake_teacher:answer"},
        "data": {},
    }
    if inputs is not None:
        (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in inputs))
        data["data"]["inputs"] = "inputs.jsonl"
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    cfg = PipelineConfig.model_validate(data)
    cfg._source = tmp_path / "pipeline.yaml"
    return cfg


def prompt_kind(req: ChatRequest) -> str:
    """Which prompt of lorapipe.data.prompts a request is (teacher, judge, paraphrase, edge, writer)."""
    text = "\n".join(m["content"] for m in req.messages)
    last = req.messages[-1]["content"]
    if "strict, consistent grader" in text:
        return "judge"
    first = req.messages[0]
    if last.startswith("You are writing the ideal output") or (
            first["role"] == "system" and first["content"].startswith("You are writing the ideal output")):
        return "teacher"  # the built-in prompt, or its few-shot form (instructions in the system turn)
    if "Paraphrase the input below" in last:
        return "paraphrase"
    if last.startswith("You are writing test inputs"):
        return "edge"
    if last.startswith("You are collecting realistic inputs"):
        return "writer"
    return "other"


def fenced(text: str, label: str = "Input:") -> str:
    """The text inside ``label\\n<<<\\n...\\n>>>`` of a prompt."""
    m = re.search(re.escape(label) + r"\n<<<\n(.*?)\n>>>", text, re.DOTALL)
    assert m, f"no {label} block in prompt: {text[:200]}"
    return m.group(1)


def extract(text: str) -> str:
    """The ideal answer of the contact task for ``text``."""
    email = re.search(r"[\w.]+@[\w.]+\w", text)
    name = re.search(r"\b([A-Z][a-z]+ [A-Z][a-z]+)\b", text)
    return json.dumps({"name": name.group(1) if name else None, "email": email.group(0) if email else None})


def contact_teacher(req: ChatRequest) -> str:
    kind = prompt_kind(req)
    last = req.messages[-1]["content"]
    if kind == "teacher":
        return extract(fenced(last))
    if kind == "paraphrase":
        n = re.search(r"rewrite number (\d+)", last)
        return ("Paraphrased: " if not n else f"Paraphrased ({n.group(1)}): ") + fenced(last)
    if kind == "edge":
        n = re.search(r"case number (\d+)", last).group(1)
        kind = re.search(r"Write one new input that is (\w+)", last).group(1)
        return f"Edge case {kind} {n}: ping Gil Ray at gil{n}@ray.org"
    if kind == "writer":
        n = re.search(r"input number (\d+)", last).group(1)
        return f"Hello, Hal Ito{n} here, mail hal{n}@ito.com"
    if kind == "judge":
        return '{"score": 5, "rationale": "exact"}'
    raise AssertionError(f"unexpected prompt: {last[:200]}")


class FakeLLM:
    """A scripted LLM client (see the module docstring)."""

    def __init__(self, respond: Callable[[ChatRequest], str | Completion] = contact_teacher, name: str = "fake",
                 stop_after: int | None = None):
        self.respond, self.name, self.stop_after = respond, name, stop_after
        self.usage = Usage()
        self.requests: list[ChatRequest] = []

    def identity(self) -> dict[str, Any]:
        return {"kind": "fake", "model": self.name}

    def complete(self, requests: list[ChatRequest], progress: Callable[[int], None] | None = None, *,
                 raise_on_error: bool = True) -> list[Completion]:
        out = []
        for r in requests:
            if self.stop_after is not None and len(self.requests) >= self.stop_after:
                raise KeyboardInterrupt("simulated crash")
            self.requests.append(r)
            res = self.respond(r)
            c = res if isinstance(res, Completion) else Completion(
                text=res, prompt_tokens=sum(len(m["content"].split()) for m in r.messages),
                completion_tokens=len(res.split()))
            if c.error and raise_on_error:
                raise RuntimeError(c.error)
            self.usage.add(c)
            out.append(c)
            if progress:
                progress(1)
        return out

    def kinds(self) -> list[str]:
        return [prompt_kind(r) for r in self.requests]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
