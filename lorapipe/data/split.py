"""Split stage: drop exact and near-duplicate rows, then a seeded train/eval split by source group.

1. **Exact duplicates**: same user and assistant text after case-folding and collapsing whitespace.
2. **Near-duplicates**: character 5-gram shingles of user + assistant text; MinHash signatures
   (128 universal hashes mod 2^31-1, numpy) bucketed by LSH bands chosen so that a pair at the
   threshold is a candidate with probability > 1 - 1e-6; every candidate pair is then checked with
   the exact Jaccard similarity, so nothing under ``split.near_duplicate_threshold`` is dropped.
   Of a duplicate pair the row with the higher ``meta.score`` stays (ties: the earlier row).
3. **Grouped split**: rows sharing ``meta.source_id`` (an input, its samples and its paraphrases)
   land on the same side. Groups are shuffled with ``split.seed`` and given to eval while that moves
   the eval row count closer to ``eval_fraction`` of the rows; with two or more groups each side gets
   at least one. With ``data.eval_file`` that file is the eval set (its rows win the dedup, so no
   training row duplicates an eval row) and every remaining row trains.

Writes ``train.jsonl``, ``eval.jsonl``, ``duplicates.jsonl`` (dropped rows with ``meta.reasons``)
and ``manifest.json`` (counts in ``metrics``).
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import assistant_text, read_rows, user_text
from lorapipe.data.journal import normalize_text
from lorapipe.manifest import Manifest, sha256_file, sha256_json, write_jsonl

MERSENNE = np.uint64((1 << 31) - 1)
SHINGLE = 5
NUM_PERM = 128
MISS_RATE = 1e-6  # LSH bands are chosen so a pair at the threshold is missed at most this often


def shingles(text: str, n: int = SHINGLE) -> frozenset[int]:
    """Hashed character n-grams of the normalised text (the whole text when shorter than n)."""
    t = normalize_text(text)
    grams = [t[i:i + n] for i in range(max(1, len(t) - n + 1))]
    return frozenset(zlib.crc32(g.encode()) for g in grams)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def lsh_bands(threshold: float, num_perm: int = NUM_PERM, miss_rate: float = MISS_RATE) -> tuple[int, int]:
    """``(bands, rows)``: the most selective banding whose chance of missing a pair with Jaccard
    ``threshold`` is below ``miss_rate`` (candidates are verified exactly, so selectivity only saves time)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if (1 - threshold ** r) ** b <= miss_rate:
            return b, r
    return num_perm, 1


class NearDuplicateIndex:
    """MinHash + LSH over shingle sets; :meth:`add` returns the kept item a new one duplicates."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.threshold = threshold
        self.a = rng.integers(1, int(MERSENNE), num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(MERSENNE), num_perm, dtype=np.uint64)
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.sets: list[frozenset[int]] = []

    def signature(self, s: frozenset[int]) -> np.ndarray:
        x = np.fromiter(s, dtype=np.uint64, count=len(s)) % MERSENNE
        # a, x < 2^31, so a*x + b < 2^63: no uint64 overflow
        return ((x[:, None] * self.a[None, :] + self.b[None, :]) % MERSENNE).min(axis=0)

    def find(self, s: frozenset[int]) -> tuple[int, float] | None:
        """The most similar indexed item at or above the threshold, as ``(index, jaccard)``."""
        sig = self.signature(s)
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for band, bucket in enumerate(self.buckets):
            for j in bucket.get(sig[band * self.rows:(band + 1) * self.rows].tobytes(), ()):
                if j not in seen:
                    seen.add(j)
                    sim = jaccard(s, self.sets[j])
                    if sim >= self.threshold and (best is None or sim > best[1]):
                        best = (j, sim)
        return best

    def add(self, s: frozenset[int]) -> int:
        sig = self.signature(s)
        idx = len(self.sets)
        self.sets.append(s)
        for band, bucket in enumerate(self.buckets):
            bucket.setdefault(sig[band * self.rows:(band + 1) * self.rows].tobytes(), []).append(idx)
        return idx


def dedupe(rows: list[dict[str, Any]], threshold: float, protected: list[dict[str, Any]] | None = None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """``(kept, dropped, counts)``. ``protected`` rows (an eval file) are never dropped and win
    against ``rows``. Kept rows keep their order; dropped rows carry ``meta.reasons``."""
    protected = protected or []
    index = NearDuplicateIndex(threshold)
    exact: dict[str, str] = {}
    owner: list[str] = []  # index position -> row id

    def text(r: dict[str, Any]) -> str:
        return user_text(r) + "\n" + assistant_text(r)

    for r in protected:
        exact.setdefault(normalize_text(user_text(r)) + "\x1f" + normalize_text(assistant_text(r)), r["meta"]["id"])
        index.add(shingles(text(r)))
        owner.append(r["meta"]["id"])
    order = sorted(range(len(rows)), key=lambda i: (-float(rows[i]["meta"].get("score") or 0.0), i))
    keep, dropped = set(), []
    counts = {"exact_duplicates": 0, "near_duplicates": 0}
    for i in order:
        r = rows[i]
        key = normalize_text(user_text(r)) + "\x1f" + normalize_text(assistant_text(r))
        if key in exact:
            counts["exact_duplicates"] += 1
            dropped.append(_dropped(r, f"duplicate: exact duplicate of row {exact[key]}"))
            continue
        s = shingles(text(r))
        hit = index.find(s)
        if hit is not None:
            counts["near_duplicates"] += 1
            dropped.append(_dropped(r, f"duplicate: near-duplicate of row {owner[hit[0]]} (Jaccard {hit[1]:.2f} "
                                       f">= split.near_duplicate_threshold {threshold:g})"))
            continue
        exact[key] = r["meta"]["id"]
        index.add(s)
        owner.append(r["meta"]["id"])
        keep.add(i)
    return [r for i, r in enumerate(rows) if i in keep], dropped, counts


def _dropped(row: dict[str, Any], reason: str) -> dict[str, Any]:
    meta = dict(row["meta"])
    meta["reasons"] = [*meta.get("reasons", []), reason]
    return {"messages": row["messages"], "meta": meta}


def group_split(rows: list[dict[str, Any]], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split by ``meta.source_id``: ``(train, eval)`` with eval close to ``eval_fraction`` of
    the rows, no group on both sides, and at least one group per side when there are two or more."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(str(r["meta"]["source_id"]), []).append(i)
    ids = sorted(groups)
    random.Random(seed).shuffle(ids)
    target = eval_fraction * len(rows)
    chosen: list[str] = []
    count = 0
    for g in ids:
        size = len(groups[g])
        if abs(count + size - target) < abs(count - target):
            chosen.append(g)
            count += size
    if len(ids) >= 2 and not chosen:
        chosen.append(min(ids, key=lambda g: len(groups[g])))
    elif len(ids) >= 2 and len(chosen) == len(ids):
        count = len(rows)
        chosen.remove(min(ids, key=lambda g: abs(count - len(groups[g]) - target)))
    in_eval = {i for g in chosen for i in groups[g]}
    return ([r for i, r in enumerate(rows) if i not in in_eval], [r for i, r in enumerate(rows) if i in in_eval])


def run(cfg: PipelineConfig, in_file: str | Path, out_dir: str | Path) -> Manifest:
    """Deduplicate ``in_file`` (canonical, alpaca or prompt/completion rows) and split it into
    ``out_dir/train.jsonl`` and ``out_dir/eval.jsonl`` (deterministic: the same inputs give the same split)."""
    in_file, out_dir = Path(in_file), Path(out_dir)
    eval_file = cfg.resolve(cfg.data.eval_file)
    sp = cfg.split
    manifest = Manifest(
        stage="split",
        config_hash=sha256_json({"split": sp.model_dump(mode="json"), "system_prompt": cfg.task.system_prompt}),
        inputs={"rows": sha256_file(in_file), **({"eval_file": sha256_file(eval_file)} if eval_file else {})},
        config={"split": sp.model_dump(mode="json"), "data": {"eval_file": str(eval_file) if eval_file else None}})
    cap = cfg.data.max_line_bytes
    rows = read_rows(in_file, cfg.task.system_prompt, cap)
    given_eval = read_rows(eval_file, cfg.task.system_prompt, cap) if eval_file else None
    kept, dropped, counts = dedupe(rows, sp.near_duplicate_threshold, protected=given_eval)
    if given_eval is not None:
        train, evl = kept, given_eval
    else:
        train, evl = group_split(kept, sp.eval_fraction, sp.seed)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", evl)
    write_jsonl(out_dir / "duplicates.jsonl", dropped)

    def n_groups(rs: list[dict[str, Any]]) -> int:
        return len({r["meta"]["source_id"] for r in rs})

    total = len(train) + len(evl)
    manifest.metrics = {
        "rows_in": len(rows), **counts, "rows_after_dedup": len(kept),
        "train_rows": len(train), "eval_rows": len(evl), "train_groups": n_groups(train),
        "eval_groups": n_groups(evl), "eval_share": round(len(evl) / total, 4) if total else 0.0,
        "eval_from_file": given_eval is not None,
        "lsh": dict(zip(("bands", "rows"), lsh_bands(sp.near_duplicate_threshold))),
    }
    manifest.save(out_dir)
    return manifest
