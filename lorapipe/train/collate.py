"""Tokenisation with loss on the assistant tokens only, and dynamic padding.

Each assistant reply (its content and the end-of-turn token that teaches the model to stop) keeps
its labels, unless the message has ``"weight": 0`` (OpenAI's fine-tuning format: a reply shown as
context only); the system prompt, the user turns and the template's scaffolding are masked to -100.
Spans are found on the rendered text and mapped to tokens through the tokenizer's offsets, so the
masking does not depend on how a chat template happens to tokenise at turn boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return (text, [(start, end) character spans of assistant replies])."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:  # weight 0: context only, no loss
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not text.startswith(upto) or not upto.startswith(prefix):
            raise ValueError("the chat template does not render turns as a prefix of the conversation; "
                             "lorapipe needs a ChatML-like template to mask non-assistant tokens")
        start = len(prefix)
        end_eos = upto.find(eos, start + len(m["content"])) if eos else -1
        end = end_eos + len(eos) if end_eos >= 0 else len(upto)
        spans.append((start, end))
    return text, spans


def encode_chat(tokenizer, messages: list[dict[str, str]], max_length: int) -> dict[str, Any]:
    """Token ids and labels (-100 outside assistant replies), truncated to ``max_length``.

    ``truncated`` tells whether the row was cut; a row whose every label was cut has no ``labels``
    that count (``n_labels == 0``) and should be dropped by the caller.
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = []
    for tok, (a, b) in zip(ids, offsets):
        inside = any(a >= s and b <= e and b > a for s, e in spans)
        labels.append(tok if inside else IGNORE)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "truncated": truncated,
            "n_labels": sum(1 for x in labels if x != IGNORE)}


@dataclass
class DataCollator:
    """Right-pads a batch to its longest row (dynamic padding); padded labels are -100."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            attention[i, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def encode_rows(tokenizer, rows: list[dict[str, Any]], max_length: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Encode canonical rows; drop (and count) rows whose reply was truncated away entirely."""
    out, stats = [], {"rows": len(rows), "truncated": 0, "dropped_no_labels": 0}
    for r in rows:
        e = encode_chat(tokenizer, r["messages"], max_length)
        stats["truncated"] += int(e["truncated"])
        if e["n_labels"] == 0:
            stats["dropped_no_labels"] += 1
            continue
        out.append({"input_ids": e["input_ids"], "labels": e["labels"]})
    return out, stats
