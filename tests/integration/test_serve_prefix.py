"""Shared prompt prefixes computed once (lorapipe.serve.prefix): the same answers, less prefill."""

from __future__ import annotations

import threading

import pytest
import torch
from serve_support import build_world

from lorapipe.decoding.batch import PrefixKV, Row, SamplingParams, prefill
from lorapipe.serve.adapters import BASE_ADAPTER
from lorapipe.serve.prefix import PrefixCache, common_prefix

GREEDY = SamplingParams(max_tokens=12, temperature=0)
SYSTEM = ("Extract the contact in the message as JSON with keys name, email, phone. Copy each value exactly "
          "as written; use null when a value is missing. Reply with the JSON only. ") * 3
INPUTS = ["Hi, I'm Ann Lee, reach me at ann.lee@example.com", "Bob here: +1 555 123 4567",
          "the quick brown fox", "Bonjour, je suis Zoé", "nothing to see"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-prefix"), n_adapters=2)


def prompts(engine) -> list[list[int]]:
    return [engine.encode_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
            for text in INPUTS]


def answers(engine, models: list[str], together: bool) -> list[tuple[int, ...]]:
    """Each prompt's greedy tokens (a random model's text is mostly replacement characters)."""
    ps = prompts(engine)
    out: list[tuple[int, ...] | None] = [None] * len(ps)

    def go(i: int) -> None:
        job = engine.submit(engine.acquire(models[i]), ps[i], [GREEDY], lambda *a: None)
        assert job.done.wait(120)
        out[i] = tuple(job.rows[0].tokens)

    if not together:
        for i in range(len(ps)):
            go(i)
        return out
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(ps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.parametrize("kernel", ["stacked", "peft"])
@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "one-by-one"])
def test_reused_prefixes_give_the_answers_of_a_full_prefill(world, kernel, together):
    models = ["ad0", world.base_name, "ad0", "ad1", "ad0"]
    plain = world.engine(batch_window_ms=50, lora_kernel=kernel, prefix_cache_tokens=0).start()
    try:
        want = answers(plain, models, together)
    finally:
        plain.shutdown()
    engine = world.engine(batch_window_ms=50, lora_kernel=kernel).start()
    try:
        got = answers(engine, models, together)
        again = answers(engine, models, together)  # now every prompt finds its prefix kept
        prefixes = engine._scheduler.prefixes
    finally:
        engine.shutdown()
    assert got == want and again == want
    assert len(set(want)) > 2
    shared = common_prefix(*prompts(engine)[:2])
    assert shared > 64 and prefixes.hits >= 3 and prefixes.reused_tokens >= 3 * 64


def test_kept_prefixes_stay_within_their_budget_and_leave_with_their_adapter(world):
    engine = world.engine(batch_window_ms=0, prefix_cache_tokens=400).start()
    try:
        prefixes: PrefixCache = engine._scheduler.prefixes
        for model in ("ad0", "ad1", "ad0"):  # each adapter's prefix is ~340 tokens: one fits
            for p in prompts(engine)[:2]:
                engine.generate(model, p, [GREEDY])
            assert 0 < prefixes.tokens <= 400
        internal = engine._slots["ad0"].internal
        assert [a for a, _ in prefixes._kept.values()] == [internal]
        engine.unload("ad0")
        engine._call(lambda: None)  # the delete runs on the scheduler thread before this
        assert not any(a == internal for a, _ in prefixes._kept.values())
    finally:
        engine.shutdown()


def test_decoding_after_a_kept_prefix_has_the_logits_of_a_full_prefill(world):
    """Logits, not greedy tokens: a tiny random model's argmax hardly depends on positions."""
    engine = world.engine()  # not started: its forward runs on this thread
    ps, stream, pad = prompts(engine), engine._scheduler.stream, engine._scheduler.pad_id
    n = min(common_prefix(ps[0], p) for p in ps)
    assert n > 64
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    def run(prefix) -> list:
        seen = []

        def forward(*args):
            logits, cache = engine._forward(*args)
            seen.append(logits)
            return logits, cache

        batch = prefill(forward, [Row(p, BASE_ADAPTER, params, sink=lambda d, f: None) for p in ps], stream, pad,
                        prefix)
        for _ in range(3):
            batch.step(forward, stream)
        return seen

    ids = torch.tensor([ps[0][:n]])
    _, cache = engine._forward(ids, torch.ones_like(ids), torch.arange(n)[None], None, [BASE_ADAPTER])
    full, reused = run(None), run((PrefixKV(ps[0][:n], cache), n))
    assert len(full) == len(reused) == 4
    for a, b in zip(full, reused, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("a, b, n", [([], [1], 0), ([1, 2, 3], [1, 2, 4], 2), (list(range(200)), list(range(200)), 200),
                                     (list(range(130)) + [7], list(range(130)) + [8], 130)])
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n == common_prefix(b, a)
