"""Error analysis of structured answers: exact match per field, and what kind of miss each wrong field is.

For a task whose reference answers are JSON objects (any schema), every answer is compared to its
reference field by field; nested objects are flattened to dotted paths (``address.city``), lists and
scalars are compared whole. A wrong field is one of:

* **missed** — the answer has null (or no such field) where the reference has a value;
* **miscopied** — the value is close to the reference but not equal: case, spacing, a dropped prefix
  or suffix (``612 345 678`` for ``+34 612 345 678``), a few characters off;
* **invented** — the value is nowhere in the input (and not close to the reference);
* **wrong entity** — the value is in the input but is not the reference: another person's address,
  a date taken for a phone number, a value where the reference is null.

An answer that is not a JSON object counts as ``invalid`` for every field. :func:`analyse` gives the
per-field exact-match rates, the miss counts per kind and field, and the worst examples of each
kind (the answers with the most wrong fields first).
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from typing import Any

MISS_KINDS = ("invented", "missed", "miscopied", "wrong_entity")
MISS_HELP = {"invented": "value not in the input", "missed": "null where the reference has a value",
             "miscopied": "close to the reference, not equal", "wrong_entity": "a different value that is in the input"}
N_WORST = 3  # examples kept per kind
CLOSE_RATIO = 0.8


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (a ```json fence is allowed), or None."""
    cleaned = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text or "")
    try:
        obj = json.loads(cleaned)
    except (json.JSONDecodeError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects to dotted paths; lists and scalars are leaves (an empty object is a leaf too)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, path) if isinstance(v, dict) and v else {path: v})
    return out


def is_close(got: Any, want: Any) -> bool:
    """Nearly the reference: equal up to case/spacing, one containing the other, the same digits
    with some dropped at either end, or a high character similarity."""
    a, b = _norm(_text(got)), _norm(_text(want))
    if not a or not b:
        return False
    if a == b or (min(len(a), len(b)) >= 3 and (a in b or b in a)):
        return True
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    if min(len(da), len(db)) >= 5 and (da in db or db in da):
        return True
    return difflib.SequenceMatcher(None, a, b).ratio() >= CLOSE_RATIO


def in_input(value: Any, input_text: str) -> bool:
    """The value occurs in the input as a whole token run ("7" is not in "678"), up to case and spacing."""
    v = _norm(_text(value))
    return bool(v) and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", _norm(input_text)) is not None


def classify(input_text: str, want: Any, got: Any) -> str | None:
    """The kind of miss of one field (None when it is right); see the module docstring."""
    if got == want:
        return None
    if got is None:
        return "missed"
    if want is not None and is_close(got, want):
        return "miscopied"
    return "wrong_entity" if in_input(got, input_text) else "invented"


def compare_fields(input_text: str, reference: dict[str, Any], output: str) -> dict[str, str | None] | None:
    """Field path -> miss kind (None = right, ``invalid`` = the answer is not a JSON object)."""
    want = flatten(reference)
    obj = parse_object(output)
    if obj is None:
        return dict.fromkeys(want, "invalid")
    got = flatten(obj)
    return {path: classify(input_text, want[path], got.get(path)) for path in want}


def analyse(inputs: list[str], references: list[str], outputs: list[str],
            ids: list[str] | None = None, n_worst: int = N_WORST) -> dict[str, Any] | None:
    """Per-field exact match and the miss taxonomy of one arm; None when the references are not
    JSON objects (the analysis is for structured outputs only)."""
    refs = [parse_object(r) for r in references]
    if not refs or any(r is None for r in refs):
        return None
    ids = ids or [str(i) for i in range(len(inputs))]
    fields: dict[str, dict[str, Any]] = {}
    misses = dict.fromkeys(MISS_KINDS, 0)
    invalid = 0
    rows = []
    for i, (inp, ref, out) in enumerate(zip(inputs, refs, outputs)):
        kinds = compare_fields(inp, ref, out)
        invalid += any(k == "invalid" for k in kinds.values())
        got = flatten(parse_object(out) or {})
        for path, kind in kinds.items():
            f = fields.setdefault(path, {"right": 0, "n": 0, **dict.fromkeys(MISS_KINDS, 0), "invalid": 0})
            f["n"] += 1
            f["right" if kind is None else kind] += 1
            if kind in misses:
                misses[kind] += 1
        wrong = {p: k for p, k in kinds.items() if k in MISS_KINDS}
        if wrong:
            rows.append((len(wrong), i, wrong, got, flatten(ref)))
    worst: dict[str, list[dict[str, Any]]] = {k: [] for k in MISS_KINDS}
    for n_wrong, i, wrong, got, want in sorted(rows, key=lambda x: (-x[0], x[1])):
        for path, kind in wrong.items():
            if len(worst[kind]) < n_worst and all(e["index"] != i for e in worst[kind]):
                worst[kind].append({"index": i, "id": ids[i], "field": path, "reference": want.get(path),
                                    "output_value": got.get(path), "wrong_fields": n_wrong, "input": inputs[i],
                                    "output": outputs[i]})
    n = len(inputs)
    per_field = {p: {"exact": f["right"] / f["n"], **{k: f[k] for k in (*MISS_KINDS, "invalid")}}
                 for p, f in fields.items()}
    return {"n": n, "invalid": invalid, "per_field": per_field, "misses": misses, "worst": worst}


def field_table_markdown(analyses: dict[str, dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """Markdown lines: exact match per field (rows) for each arm (columns), then the miss counts."""
    arms = [a for a in analyses if analyses[a]]
    if not arms:
        return []
    paths = list(analyses[arms[0]]["per_field"])
    out = ["| field | " + " | ".join(labels[a] for a in arms) + " |", "|---|" + "---|" * len(arms)]
    out += [f"| {p} | " + " | ".join(f"{analyses[a]['per_field'][p]['exact']:.0%}" for a in arms) + " |" for p in paths]
    out += ["", "| miss | " + " | ".join(labels[a] for a in arms) + " |", "|---|" + "---|" * len(arms)]
    out += [f"| {k.replace('_', ' ')} ({MISS_HELP[k]}) | " + " | ".join(str(analyses[a]["misses"][k]) for a in arms)
            + " |" for k in MISS_KINDS]
    out.append("| invalid JSON (answers) | " + " | ".join(str(analyses[a]["invalid"]) for a in arms) + " |")
    return out
