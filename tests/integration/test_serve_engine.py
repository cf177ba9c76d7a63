"""The engine without HTTP: continuous batching, leases, failures and draining on shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from serve_support import QUESTION, build_world, client, live_server

from lorapipe.decoding.batch import SamplingParams
from lorapipe.serve.adapters import AdapterRejected
from lorapipe.serve.engine import EngineClosed

GREEDY = SamplingParams(max_tokens=16, temperature=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-engine"), n_adapters=3)


@pytest.fixture(params=["stacked", "peft"])
def engine(world, request):
    eng = world.engine(batch_window_ms=0, max_batch_size=8, lora_kernel=request.param).start()
    yield eng
    eng.shutdown()


def test_rows_joining_a_running_batch_answer_as_if_alone(world, engine):
    models = ["ad0", "ad1", world.base_name, "ad2", "ad1"]
    prompts = [engine.encode_chat([{"role": "user", "content": "x" * k}]) for k in (1, 9, 40, 3, 17)]
    alone = [engine.generate(m, p, [GREEDY])[0].text for m, p in zip(models, prompts, strict=True)]
    together: list[str | None] = [None] * 5

    def go(i):
        time.sleep(0.01 * i)  # staggered: later rows join while earlier ones decode
        together[i] = engine.generate(models[i], prompts[i], [GREEDY])[0].text

    threads = [threading.Thread(target=go, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == alone
    assert len(set(alone)) > 2


def test_more_choices_than_batch_rows(engine):
    prompt = engine.encode_chat(QUESTION)
    results = engine.generate("ad0", prompt, [SamplingParams(max_tokens=4, temperature=1.0, seed=i)
                                              for i in range(20)])
    assert len(results) == 20
    assert all(r.finish_reason in ("stop", "length") and r.completion_tokens <= 4 for r in results)
    assert len({r.text for r in results}) > 10  # each choice has its own seed


def test_cancel_frees_the_rows_and_the_lease(engine):
    lease = engine.acquire("ad1")
    finished = threading.Event()
    reasons = []

    def sink(i, delta, fin):
        if fin:
            reasons.append(fin)
            finished.set()

    job = engine.submit(lease, engine.encode_chat(QUESTION), [SamplingParams(max_tokens=900, temperature=0)], sink)
    job.cancel()
    assert finished.wait(30) and reasons == ["cancelled"]
    assert lease.slot.refs == 0


def test_a_failed_forward_fails_its_rows_and_the_engine_keeps_serving(engine, monkeypatch):
    real = engine._forward
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device error")
        return real(*args)

    monkeypatch.setattr(engine, "_forward", flaky)
    prompt = engine.encode_chat(QUESTION)
    failed = engine.generate("ad0", prompt, [GREEDY])[0]
    assert failed.finish_reason == "error" and "simulated device error" in failed.text
    assert engine.generate("ad0", prompt, [GREEDY])[0].finish_reason in ("stop", "length")


def test_shutdown_finishes_running_generations_then_refuses(world):
    engine = world.engine(batch_window_ms=0).start()
    lease = engine.acquire("ad0")
    done = threading.Event()
    reasons = []
    engine.submit(lease, engine.encode_chat(QUESTION), [SamplingParams(max_tokens=200, temperature=0)],
                  lambda i, d, f: (reasons.append(f), done.set()) if f else None)
    engine.shutdown(timeout=120)
    assert done.is_set() and reasons == ["length"]
    with pytest.raises(EngineClosed, match="shutting down"):
        engine.submit(engine.acquire("ad0"), [1, 2], [GREEDY], lambda *a: None)


def test_server_stop_lets_an_open_stream_finish(world):
    with live_server(world.engine()) as (srv, _):
        stream = iter(client(srv).chat.completions.create(model="ad1", messages=QUESTION, max_tokens=120,
                                                          temperature=0, stream=True))
        next(stream)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        chunks = list(stream)
        stopper.join(60)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert not srv.thread.is_alive()


def rows_logits(engine, models, prompt):
    """The engine's next-token logits for ``prompt``, one row per model in ``models``, in one forward pass
    on its thread."""
    leases = [engine.acquire(model) for model in models]
    ids = torch.tensor([prompt] * len(leases))
    mask = torch.ones_like(ids)
    try:
        return engine._call(lambda: engine._forward(ids, mask, mask.cumsum(-1) - 1, None,
                                                    [lease.adapter for lease in leases]))[0]
    finally:
        for lease in leases:
            lease.release()


def last_logits(engine, model, prompt):
    """The engine's next-token logits for ``prompt`` on ``model`` (one forward pass, on its thread)."""
    return rows_logits(engine, [model], prompt)[0]


def peft_logits(world, adapter, prompt):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world.base), adapter).eval()
    with torch.inference_mode():
        return model(input_ids=torch.tensor([prompt])).logits[0, -1]


@pytest.mark.parametrize("lora_kwargs", [
    {"r": 8},
    {"r": 8, "use_rslora": True},
    {"r": 8, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"v_proj": 3.0}},
    {"r": 8, "layers_to_transform": [1]},  # lora.layers_to_transform: the upper layer only
])
def test_adapter_math_matches_peft(world, engine, lora_kwargs):
    name = "math-" + "-".join(sorted(lora_kwargs))
    path = world.add_version(name, seed=9, b_std=0.05, **lora_kwargs)
    prompt = engine.encode_chat(QUESTION)
    engine.generate("ad0", prompt, [GREEDY])  # wraps the layers: the next adapter takes the fast path
    got = last_logits(engine, name, prompt)
    assert torch.allclose(got, peft_logits(world, path, prompt), atol=1e-4)
    assert not torch.allclose(got, last_logits(engine, world.base_name, prompt), atol=1e-2)
    if engine.lora_kernel == "stacked":  # it was copied into the stacks, without PEFT's injection
        assert not engine._peft.peft_config


def test_a_pass_of_adapters_on_different_modules_gives_each_row_peft_logits(world, engine):
    """Three adapter runs in one pass take the grouped kernel (batched matmuls over the stacked slots):
    adapters of different ranks on different modules (q/k/v or gate/up partly adapted) give every row
    PEFT's logits."""
    kinds = {"grp-qv": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
             "grp-all": {"r": 8},
             "grp-mlp": {"r": 6, "target_modules": ["gate_proj", "down_proj"]}}
    paths = {name: world.add_version(name, seed=20 + i, b_std=0.05, **kw) for i, (name, kw) in enumerate(kinds.items())}
    prompt = engine.encode_chat(QUESTION)
    engine.generate("ad0", prompt, [GREEDY])  # wraps the layers: the next adapters take the fast path
    logits = rows_logits(engine, list(kinds), prompt)
    for row, (name, path) in enumerate(paths.items()):
        assert torch.allclose(logits[row], peft_logits(world, path, prompt), atol=1e-4), name


def test_embedding_lora_needs_the_peft_kernel(world, engine):
    world.add_version("emb", seed=12, target_modules=["q_proj", "embed_tokens"])
    prompt = engine.encode_chat(QUESTION)
    if engine.lora_kernel == "stacked":
        with pytest.raises(AdapterRejected, match="start the server with `--lora-kernel peft`|--lora-kernel peft"):
            engine.generate("emb", prompt, [GREEDY])
    else:
        got = engine.generate("emb", prompt, [SamplingParams(max_tokens=8, temperature=0)])[0]
        assert got.text.strip() == world.expected[world.fingerprint("emb")]
