"""What changed between two versions: config keys, data, metrics, files, base model, code."""

from __future__ import annotations

from typing import Any


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (``lora.r``); lists and scalars are leaves."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj} if prefix else {}


CHECK_SET_SCORES = ("tuned_exact_match", "tuned_mean_score")  # a drop in either is flagged


def check_sets(metrics: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The check sets (``evaluate.extra_sets``) of a version's metrics: name -> {n, base_exact_match, ...}."""
    return ((metrics or {}).get("evaluate") or {}).get("extra_sets") or {}


def check_set_drops(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check-set score of ``b`` below ``a``'s on the same set (``b`` being the later version)."""
    old, new = check_sets(a.get("metrics")), check_sets(b.get("metrics"))
    drops = []
    for name in sorted(set(old) & set(new)):
        for metric in CHECK_SET_SCORES:
            x, y = old[name].get(metric), new[name].get(metric)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y < x:
                drops.append({"set": name, "metric": metric, "old": x, "new": y, "delta": y - x})
    return drops


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key) or (key in old) != (key in new):
            out.append({"key": key, "old": old.get(key), "new": new.get(key)})
    return out


def diff_records(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two version records; every list holds only what differs."""
    metrics = _changes(flatten(a.get("metrics") or {}), flatten(b.get("metrics") or {}))
    for m in metrics:
        old, new = m["old"], m["new"]
        num = (int, float)
        if isinstance(old, num) and isinstance(new, num) and not isinstance(old, bool) and not isinstance(new, bool):
            m["delta"] = new - old
    data = []
    da, db = a.get("data") or {}, b.get("data") or {}
    for f in sorted(set(da) | set(db)):
        x, y = da.get(f) or {}, db.get(f) or {}
        if x.get("sha256") != y.get("sha256"):
            data.append({"file": f, "old_rows": x.get("rows"), "new_rows": y.get("rows"),
                         "old_sha256": x.get("sha256"), "new_sha256": y.get("sha256")})
    fa, fb = a.get("files") or {}, b.get("files") or {}
    out: dict[str, Any] = {
        "a": a.get("ref"), "b": b.get("ref"),
        "same_content": a.get("digest") == b.get("digest"),
        "config": _changes(flatten(a.get("config") or {}), flatten(b.get("config") or {})),
        "data": data,
        "metrics": metrics,
        "check_set_drops": check_set_drops(a, b),
        "files": {"added": sorted(set(fb) - set(fa)), "removed": sorted(set(fa) - set(fb)),
                  "changed": sorted(f for f in set(fa) & set(fb) if fa[f] != fb[f])},
    }
    for section in ("base_model", "teacher", "judge", "prompts"):
        if a.get(section) != b.get(section):
            out[section] = _changes(flatten({section: a.get(section)}), flatten({section: b.get(section)}))
    ca, cb = a.get("code") or {}, b.get("code") or {}
    if (ca.get("lorapipe"), ca.get("git_revision")) != (cb.get("lorapipe"), cb.get("git_revision")):
        out["code"] = {"old": {k: ca.get(k) for k in ("lorapipe", "git_revision")},
                       "new": {k: cb.get(k) for k in ("lorapipe", "git_revision")}}
    return out
