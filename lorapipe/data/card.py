"""The data card: what the data stages made, kept and threw away, and what it cost.

Built from the stage directories (any subset of ``generate``, ``score``, ``augment``, ``split``):
row counts per stage, rejections by reason kind (``format``, ``grounding``, ``judge``, ``duplicate``...)
and the most common reasons, a 0–5 score histogram, the origin mix of the final rows, token-length
statistics of inputs and outputs per split (whitespace tokens, or a tokenizer's), and the teacher's
and judge's identity and token usage. :func:`run` writes ``data_card.json`` and ``data_card.md``;
:func:`summary` is the few lines the CLI prints.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorapipe.data.formats import assistant_text, read_jsonl, user_text
from lorapipe.data.rubric import reason_kind
from lorapipe.llm.calls import identity_of, usage_of
from lorapipe.manifest import Manifest, atomic_write, atomic_write_json, sha256_file, sha256_json

STAGES = ("generate", "score", "augment", "split")
FILES = {"generate": ["generated.jsonl", "failed.jsonl"], "score": ["scored.jsonl", "rejected.jsonl"],
         "augment": ["augmented.jsonl", "rejected.jsonl"], "split": ["train.jsonl", "eval.jsonl", "duplicates.jsonl"]}
BINS = ("0-1", "1-2", "2-3", "3-4", "4-5")
USAGE_KEYS = ("calls", "cached", "failed", "prompt_tokens", "completion_tokens", "cost")


def _read(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def _length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    v = sorted(values)

    def pct(p: float) -> int:
        return v[min(len(v) - 1, round(p * (len(v) - 1)))]

    return {"count": len(v), "min": v[0], "mean": round(sum(v) / len(v), 1), "p50": pct(0.5), "p95": pct(0.95),
            "max": v[-1]}


def _counter(tokenizer: Any) -> Any:
    if tokenizer is None:
        return lambda t: len(t.split())
    return lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])


def _llm_usage(role: str, manifests: dict[str, Manifest], llm: Any) -> dict[str, Any] | None:
    """Identity and usage of the teacher/judge: from the live client when given (it has counted the
    whole run), else summed from the stage manifests."""
    if llm is not None:
        return {"identity": identity_of(llm), "usage": usage_of(llm), "stages": None}
    per_stage, ident = {}, None
    for stage, m in manifests.items():
        if m.extra.get(role):
            ident = ident or m.extra[role]
            per_stage[stage] = m.extra.get(f"{role}_usage") or {}
    if ident is None:
        return None
    total = {k: round(sum(u.get(k, 0) or 0 for u in per_stage.values()), 6) for k in USAGE_KEYS}
    return {"identity": ident, "usage": total, "stages": per_stage}


def _edge_cases(manifest: Manifest | None, augment: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """Per category (augment.edge_cases): the quota, what was accepted and rejected, accepted per variant."""
    quotas = (manifest.metrics.get("edge_cases") if manifest else None) or {}
    if not any(q.get("quota") for q in quotas.values()):
        return None
    out = {}
    for cat, q in quotas.items():
        origin = f"edge:{cat}"
        kept = [r for r in augment.get("augmented.jsonl", []) if r.get("meta", {}).get("origin") == origin]
        rejected = augment.get("rejected.jsonl", [])
        out[cat] = {"quota": q.get("quota", 0), "accepted": len(kept),
                    "rejected": sum(r.get("meta", {}).get("origin") == origin for r in rejected),
                    "variants": dict(sorted(Counter(r["meta"].get("variant", "?") for r in kept).items()))}
    return out


def build_card(cfg: Any, dirs: dict[str, str | Path], tokenizer: Any = None,
               llms: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card as a dict. ``dirs`` maps stage names to their output directories; ``llms`` may give
    the live ``teacher``/``judge`` clients (their usage then covers the whole run)."""
    dirs = {k: Path(v) for k, v in dirs.items() if k in STAGES and v is not None and Path(v).is_dir()}
    manifests = {k: m for k, d in dirs.items() if (m := Manifest.load(d)) is not None}
    data = {stage: {f: _read(d / f) for f in FILES[stage]} for stage, d in dirs.items()}

    counts: dict[str, Any] = {}
    if "generate" in data:
        counts["generate"] = {"rows": len(data["generate"]["generated.jsonl"]),
                              "failed": len(data["generate"]["failed.jsonl"])}
    if "score" in data:
        counts["score"] = {"kept": len(data["score"]["scored.jsonl"]), "rejected": len(data["score"]["rejected.jsonl"])}
    if "augment" in data:
        m = manifests.get("augment")
        originals = m.metrics.get("originals", 0) if m else 0
        counts["augment"] = {"rows": len(data["augment"]["augmented.jsonl"]),
                             "added": len(data["augment"]["augmented.jsonl"]) - originals,
                             "rejected": len(data["augment"]["rejected.jsonl"])}
    if "split" in data:
        counts["split"] = {"train": len(data["split"]["train.jsonl"]), "eval": len(data["split"]["eval.jsonl"]),
                           "duplicates": len(data["split"]["duplicates.jsonl"])}

    dropped = [(stage, r) for stage, f in (("score", "rejected.jsonl"), ("augment", "rejected.jsonl"),
                                           ("split", "duplicates.jsonl")) for r in data.get(stage, {}).get(f, [])]
    by_kind: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for _, r in dropped:
        reasons = r.get("meta", {}).get("reasons", []) or ["other: no reason recorded"]
        by_kind.update({reason_kind(x) for x in reasons})
        by_reason[reasons[0][:120]] += 1
    if "generate" in data and data["generate"]["failed.jsonl"]:
        by_kind["teacher"] += len(data["generate"]["failed.jsonl"])

    scored = [r for stage, f in (("score", "scored.jsonl"), ("score", "rejected.jsonl"),
                                 ("augment", "augmented.jsonl"), ("augment", "rejected.jsonl"))
              for r in data.get(stage, {}).get(f, [])]
    seen_ids, hist = set(), dict.fromkeys(BINS, 0)
    for r in scored:
        meta = r.get("meta", {})
        if "score" not in meta or meta.get("id") in seen_ids:  # originals reappear in augmented.jsonl
            continue
        seen_ids.add(meta.get("id"))
        hist[BINS[min(4, max(0, int(float(meta["score"]))))]] += 1

    if "split" in data:
        final = {"train": data["split"]["train.jsonl"], "eval": data["split"]["eval.jsonl"]}
    elif "augment" in data:
        final = {"all": data["augment"]["augmented.jsonl"]}
    elif "score" in data:
        final = {"all": data["score"]["scored.jsonl"]}
    else:
        final = {"all": data.get("generate", {}).get("generated.jsonl", [])}
    origins = Counter(r["meta"].get("origin", "file") for rows in final.values() for r in rows)
    ntok = _counter(tokenizer)
    lengths = {name: {"input": _length_stats([ntok(user_text(r)) for r in rows]),
                      "output": _length_stats([ntok(assistant_text(r)) for r in rows])}
               for name, rows in final.items()}
    llms = llms or {}
    return {
        "edge_cases": _edge_cases(manifests.get("augment"), data.get("augment", {})),
        "task": {"name": cfg.task.name, "description": cfg.task.description},
        "counts": counts,
        "rejected_by_kind": dict(by_kind.most_common()),
        "top_reasons": [{"reason": k, "rows": v} for k, v in by_reason.most_common(10)],
        "score_histogram": hist,
        "origin_mix": dict(sorted(origins.items())),
        "token_lengths": {"tokenizer": "whitespace" if tokenizer is None
                          else getattr(tokenizer, "name_or_path", "tokenizer"), **lengths},
        "teacher": _llm_usage("teacher", manifests, llms.get("teacher")),
        "judge": _llm_usage("judge", manifests, llms.get("judge")),
        "stage_metrics": {k: m.metrics for k, m in manifests.items()},
    }


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(card: dict[str, Any]) -> str:
    """The card for people (``data_card.md``)."""
    parts = [f"# Data card: {card['task']['name']}", "", card["task"]["description"], "", "## Rows per stage", ""]
    parts.append(_table(["stage", "counts"], [[s, ", ".join(f"{k} {v}" for k, v in c.items())]
                                             for s, c in card["counts"].items()]))
    parts += ["", "## Rejected, by kind of reason", ""]
    parts.append(_table(["kind", "rows"], [[k, v] for k, v in card["rejected_by_kind"].items()])
                 if card["rejected_by_kind"] else "Nothing was rejected.")
    if card["top_reasons"]:
        parts += ["", "Most common reasons:", ""] + [f"- {r['rows']} × {r['reason']}" for r in card["top_reasons"]]
    parts += ["", "## Score histogram (0–5)", ""]
    total = sum(card["score_histogram"].values()) or 1
    parts.append(_table(["score", "rows", ""], [[b, n, "█" * round(30 * n / total)]
                                                for b, n in card["score_histogram"].items()]))
    if card.get("edge_cases"):
        parts += ["", "## Edge cases (augment.edge_cases)", ""]
        parts.append(_table(["category", "quota", "accepted", "rejected", "accepted by variant"],
                            [[c, e["quota"], e["accepted"], e["rejected"],
                              ", ".join(f"{v} {n}" for v, n in e["variants"].items()) or "-"]
                             for c, e in card["edge_cases"].items()]))
    parts += ["", "## Origin mix of the final rows", ""]
    parts.append(_table(["origin", "rows"], [[k, v] for k, v in card["origin_mix"].items()]))
    tl = card["token_lengths"]
    parts += ["", f"## Token lengths ({tl['tokenizer']} tokens)", ""]
    rows = [[f"{name} {side}", *(st.get(k, "") for k in ("count", "min", "mean", "p50", "p95", "max"))]
            for name, sides in tl.items() if name != "tokenizer" for side, st in sides.items()]
    parts.append(_table(["rows", "count", "min", "mean", "p50", "p95", "max"], rows))
    for role in ("teacher", "judge"):
        info = card.get(role)
        parts += ["", f"## {role.capitalize()}", ""]
        if not info:
            parts.append("none")
            continue
        parts.append("`" + json.dumps(info["identity"], sort_keys=True) + "`")
        u = info["usage"] or {}
        parts.append("")
        parts.append(_table(list(USAGE_KEYS), [[u.get(k, 0) for k in USAGE_KEYS]]))
    return "\n".join(parts) + "\n"


def summary(card: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    c = card["counts"]
    lines = []
    if "generate" in c:
        lines.append(f"generated {c['generate']['rows']} rows ({c['generate']['failed']} failed)")
    if "score" in c:
        lines.append(f"kept {c['score']['kept']}, rejected {c['score']['rejected']}")
    if "augment" in c:
        lines.append(f"augmented +{c['augment']['added']} (rejected {c['augment']['rejected']})")
    if "split" in c:
        lines.append(f"train {c['split']['train']} / eval {c['split']['eval']} "
                     f"({c['split']['duplicates']} duplicates dropped)")
    if card.get("edge_cases"):
        lines.append("edge cases (accepted/quota): " + ", ".join(f"{c} {e['accepted']}/{e['quota']}"
                                                                for c, e in card["edge_cases"].items()))
    if card["rejected_by_kind"]:
        lines.append("rejections: " + ", ".join(f"{k} {v}" for k, v in card["rejected_by_kind"].items()))
    for role in ("teacher", "judge"):
        if card.get(role) and card[role]["usage"]:
            u = card[role]["usage"]
            cost = f", cost {u['cost']:.4f}" if u.get("cost") else ""
            lines.append(f"{role}: {u.get('calls', 0)} calls ({u.get('cached', 0)} cached), "
                         f"{u.get('prompt_tokens', 0)}+{u.get('completion_tokens', 0)} tokens{cost}")
    return "\n".join(lines)


def run(cfg: Any, dirs: Mapping[str, str | Path], out_dir: str | Path, tokenizer: Any = None,
        llms: dict[str, Any] | None = None) -> Manifest:
    """Write ``data_card.json`` and ``data_card.md`` into ``out_dir`` (see :func:`build_card`)."""
    out_dir = Path(out_dir)
    card = build_card(cfg, dirs, tokenizer, llms)
    inputs = {f"{stage}/{f}": sha256_file(Path(d) / f) for stage, d in dirs.items() if stage in FILES
              for f in FILES[stage] if (Path(d) / f).is_file()}
    manifest = Manifest(stage="data_card", config_hash=sha256_json({"task": cfg.task.name}), inputs=inputs,
                        metrics={"counts": card["counts"]})
    atomic_write_json(out_dir / "data_card.json", card)
    atomic_write(out_dir / "data_card.md", render_markdown(card))
    manifest.save(out_dir)
    return manifest
