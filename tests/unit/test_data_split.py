"""Split stage: exact and near-duplicate removal (MinHash + LSH, verified exactly), grouped seeded split."""

from __future__ import annotations

import itertools
import json

import pytest
from data_fakes import make_cfg, read_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorapipe.data import split
from lorapipe.data.formats import assistant_text, make_row, user_text
from lorapipe.data.journal import normalize_text

WORDS = [f"{a}{b}{c}" for a, b, c in itertools.product("bcdfgklm", "aeiou", "nprstvz")][:200]


def row(text: str, source: str, answer: str = "ok", score: float = 5.0, rid: str | None = None) -> dict:
    meta = {"source_id": source, "origin": "teacher", "score": score}
    if rid:
        meta["id"] = rid
    return make_row("sys", text, answer, **meta)


def sim(a: dict, b: dict) -> float:
    return split.jaccard(_shingles(a), _shingles(b))


def _shingles(r: dict) -> frozenset[int]:
    if "_sh" not in r:  # cached on the row: the property test compares every pair
        r["_sh"] = split.shingles(user_text(r) + "\n" + assistant_text(r))
    return r["_sh"]


@st.composite
def datasets(draw):
    """Groups of rows with random texts, some rows being near copies of rows in other groups."""
    n_groups = draw(st.integers(1, 10))
    rows = []
    for g in range(n_groups):
        for _ in range(draw(st.integers(1, 5))):
            words = draw(st.lists(st.sampled_from(WORDS), min_size=10, max_size=18))
            rows.append(row(" ".join(words), f"g{g}"))
    for _ in range(draw(st.integers(0, 6))):
        src = rows[draw(st.integers(0, len(rows) - 1))]
        tweak = draw(st.sampled_from(["", " x", "!", "  "]))  # "" and "  " are exact duplicates once normalised
        rows.append(row(user_text(src) + tweak, f"g{draw(st.integers(0, n_groups - 1))}"))
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=datasets(), fraction=st.sampled_from([0.1, 0.2, 0.5]), seed=st.integers(0, 5))
def test_split_properties(rows, fraction, seed):
    threshold = 0.9
    kept, dropped, counts = split.dedupe(rows, threshold)
    # every drop is justified by a kept row, and no two kept rows are (near) duplicates
    for d in dropped:
        assert any(sim(d, k) >= threshold for k in kept), d["meta"]["reasons"]
    for a, b in itertools.combinations(kept, 2):
        assert sim(a, b) < threshold
    assert len(kept) + len(dropped) == len(rows) == len(kept) + sum(counts.values())

    train, evl = split.group_split(kept, fraction, seed)
    train_groups = {r["meta"]["source_id"] for r in train}
    eval_groups = {r["meta"]["source_id"] for r in evl}
    assert not train_groups & eval_groups, "a source group landed on both sides"
    assert sorted(id(r) for r in train + evl) == sorted(id(r) for r in kept)
    sizes = {}
    for r in kept:
        sizes[r["meta"]["source_id"]] = sizes.get(r["meta"]["source_id"], 0) + 1
    assert abs(len(evl) - fraction * len(kept)) <= max(sizes.values())
    if len(sizes) >= 2:
        assert train and evl


@pytest.mark.parametrize("a, b, dropped_reason", [
    ("Hello   World, call me", "hello world, CALL me", "duplicate: exact duplicate of row first"),
    ("The quick brown fox jumps over the lazy dog near the river bank today and then runs home for dinner",
     "The quick brown fox jumps over the lazy dog near the river bank today and then runs home for dinner!",
     "duplicate: near-duplicate of row first (Jaccard 0.93 >= split.near_duplicate_threshold 0.9)"),
    ("The quick brown fox jumps over the lazy dog", "A slow green turtle crawls under the busy cat", None),
])
def test_duplicates_table(a, b, dropped_reason):
    kept, dropped, _ = split.dedupe([row(a, "s1", rid="first"), row(b, "s2", rid="second")], 0.9)
    if dropped_reason is None:
        assert (len(kept), dropped) == (2, [])
    else:
        assert [r["meta"]["id"] for r in kept] == ["first"]
        assert dropped[0]["meta"]["reasons"] == [dropped_reason]


def test_the_better_scored_duplicate_stays():
    rows = [row("same text here", "s1", score=4.0, rid="low"), row("Same text here", "s2", score=4.8, rid="high")]
    kept, dropped, _ = split.dedupe(rows, 0.9)
    assert [r["meta"]["id"] for r in kept] == ["high"]
    assert dropped[0]["meta"]["reasons"] == ["duplicate: exact duplicate of row high"]


@pytest.mark.parametrize("threshold, bands, rows_per_band", [(0.5, 64, 2), (0.8, 32, 4), (0.9, 21, 6), (1.0, 1, 128)])
def test_lsh_bands_keep_misses_rare(threshold, bands, rows_per_band):
    assert split.lsh_bands(threshold) == (bands, rows_per_band)
    assert (1 - threshold ** rows_per_band) ** bands <= split.MISS_RATE


def test_minhash_finds_near_duplicates_among_many():
    texts = [" ".join(WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(15)) for i in range(300)]
    index = split.NearDuplicateIndex(0.9)
    for t in texts:
        index.add(split.shingles(t))
    hit = index.find(split.shingles(texts[123] + "."))
    assert hit is not None and hit[0] == 123 and hit[1] >= 0.9
    assert index.find(split.shingles("completely different words nobody used")) is None


def test_run_writes_split_and_counts(tmp_path):
    cfg = make_cfg(tmp_path, split={"eval_fraction": 0.25, "seed": 3})
    rows = [row(f"Message number {i} from person {i} about topic {i % 7} and more words", f"src{i // 2}")
            for i in range(40)]
    rows.append(row(user_text(rows[0]), "other"))  # exact duplicate in another group
    src = tmp_path / "augmented.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = split.run(cfg, src, tmp_path / "split")
    train, evl = read_jsonl(tmp_path / "split" / "train.jsonl"), read_jsonl(tmp_path / "split" / "eval.jsonl")
    assert m.metrics["rows_in"] == 41 and m.metrics["exact_duplicates"] == 1 and m.metrics["near_duplicates"] == 0
    assert (m.metrics["train_rows"], m.metrics["eval_rows"]) == (len(train), len(evl)) == (30, 10)
    assert m.metrics["eval_groups"] == 5 and m.metrics["train_groups"] == 15
    assert len(read_jsonl(tmp_path / "split" / "duplicates.jsonl")) == 1
    again = split.run(cfg, src, tmp_path / "split")
    assert again.outputs == m.outputs  # the same rows again: the split is a function of its input and seed
    other_seed = make_cfg(tmp_path, split={"eval_fraction": 0.25, "seed": 4})
    split.run(other_seed, src, tmp_path / "split2")
    assert read_jsonl(tmp_path / "split2" / "eval.jsonl") != evl


def test_eval_file_is_the_eval_set_and_wins_the_dedup(tmp_path):
    ev = tmp_path / "eval_given.jsonl"
    ev.write_text(json.dumps(row("held out question one", "e1")) + "\n")
    cfg = make_cfg(tmp_path, data={"eval_file": "eval_given.jsonl"})
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [row("Held out  question one", "t1"),
                                                         row("a training question", "t2")]))
    m = split.run(cfg, src, tmp_path / "split")
    assert [user_text(r) for r in read_jsonl(tmp_path / "split" / "train.jsonl")] == ["a training question"]
    assert [normalize_text(user_text(r)) for r in read_jsonl(tmp_path / "split" / "eval.jsonl")] == [
        "held out question one"]
    assert m.metrics["eval_from_file"] is True and m.metrics["exact_duplicates"] == 1
