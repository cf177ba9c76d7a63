"""The fast decode path (lorapipe.decoding): same greedy answers as transformers, LoRA exact, fp16 close."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from lorapipe.decoding.generate import why_not
from lorapipe.decoding.kv import HEADROOM, KVCache, KVLayer
from lorapipe.decoding.llama import FastLlama, unsupported
from lorapipe.generation import generate
from lorapipe.testing import build_tiny_adapter, build_tiny_model

CONVS = [[{"role": "user", "content": "Hi, I'm Ann Lee " * (i % 4 + 1) + "ann@example.com"}] for i in range(7)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("fast")
    base = build_tiny_model(root / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)
    with torch.no_grad():  # random weights of std 0.02 answer one token forever; these answer varied text
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.25)
    model.save_pretrained(base)
    adapter = build_tiny_adapter(base, root / "adapters" / "contact", r=4, seed=3, b_std=0.3,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"])
    return base, adapter, AutoModelForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base)


def texts(gens):
    return [g.text for g in gens]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_fp32_greedy_answers_equal_transformers_generate(tiny, batch_size):
    _, _, model, tok = tiny
    ref = generate(model, tok, CONVS, max_new_tokens=24, batch_size=batch_size, fast=False)
    got = generate(model, tok, CONVS, max_new_tokens=24, batch_size=batch_size, weights="fp32")
    assert texts(got) == texts(ref)
    assert [g.completion_tokens for g in got] == [g.completion_tokens for g in ref]
    assert len(set(texts(ref))) > 1


def test_adapter_answers_equal_peft(tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter, model, tok = tiny
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    ref = generate(peft, tok, CONVS, max_new_tokens=24, batch_size=4, fast=False)
    got = generate(peft, tok, CONVS, max_new_tokens=24, batch_size=4, weights="fp32")
    assert texts(got) == texts(ref)
    with peft.disable_adapter():  # the A/B's base arm
        base_ref = generate(peft, tok, CONVS, max_new_tokens=24, batch_size=4, fast=False)
        base_got = generate(peft, tok, CONVS, max_new_tokens=24, batch_size=4, weights="fp32")
    assert texts(base_got) == texts(base_ref) == texts(generate(model, tok, CONVS, max_new_tokens=24, fast=False))
    assert texts(base_ref) != texts(ref)  # the adapter does change the answers


@pytest.mark.parametrize("weights", ["fp32", "fp16", "bf16"])
def test_serve_engine_answers_equal_peft(tiny, weights):
    """The server's engine on the fast path, base and adapter rows mixed in one batch, vs PEFT + generate."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorapipe.decoding.batch import SamplingParams
    from lorapipe.serve.adapters import DirectoryAdapterSource
    from lorapipe.serve.engine import Engine

    base, adapter, _, tok = tiny
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    tuned = texts(generate(peft, tok, CONVS, max_new_tokens=16, fast=False))
    with peft.disable_adapter():
        plain = texts(generate(peft, tok, CONVS, max_new_tokens=16, fast=False))
    engine = Engine.from_spec(str(base), source=DirectoryAdapterSource(adapter.parent), base_name="base",
                              batch_window_ms=50, weights=weights).start()
    try:
        assert engine._fast is not None and engine._fast.weights == weights
        jobs, out = [], {}
        for i, conv in enumerate(CONVS):
            for name in ("contact", "base"):
                lease = engine.acquire(name)
                sink = (lambda key: lambda _i, delta, _f: out.setdefault(key, []).append(delta))((name, i))
                jobs.append(engine.submit(lease, engine.encode_chat(conv), [SamplingParams(16, temperature=0)], sink))
        for job in jobs:
            assert job.done.wait(60)
    finally:
        engine.shutdown()
    got = {k: "".join(v).strip() for k, v in out.items()}
    agree = [got["contact", i] == tuned[i] for i in range(len(CONVS))] + \
        [got["base", i] == plain[i] for i in range(len(CONVS))]
    if weights == "fp32":
        assert all(agree)
    else:  # half-precision weights flip near ties, which random weights are full of: most answers still match
        assert sum(agree) >= 0.6 * len(agree)  # (measured 12/14 fp16, 10/14 bf16; the demo model: bench/decode.py)


class _Slots:
    """Adapters in slots of per-layer stacks, as the server keeps them (slot 0: the base)."""

    def __init__(self, model, slots=4, r=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.segments = []
        self.a, self.b = {}, {}
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features != model.config.vocab_size:
                a = torch.randn(slots, r, module.in_features, generator=g) * 0.2
                b = torch.randn(slots, module.out_features, r, generator=g) * 0.2
                a[0], b[0] = 0, 0
                self.a[module], self.b[module] = a, b

    def views(self, module, layer, proj):
        a, b = self.a[module], self.b[module]
        return [(a[s].t(), b[s].t()) for s in range(a.shape[0])]


class _StackedSlots(_Slots):
    def stacks(self, module, layer, proj, lo, hi):
        return self.a[module][lo:hi].transpose(1, 2), self.b[module][lo:hi].transpose(1, 2)


@pytest.mark.parametrize("segments", [
    [(1, 0, 2), (2, 2, 4), (3, 4, 6)],  # every row adapted, equal runs: the rows are only viewed
    [(2, 0, 1), (1, 1, 3), (3, 4, 5), (2, 5, 6)],  # a base row, unequal runs, a slot in two runs
])
def test_many_adapter_runs_take_batched_matmuls_with_the_same_result(tiny, segments):
    _, _, model, tok = tiny
    ids = torch.tensor([tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)["input_ids"][:9]
                        for c in CONVS[:6]])
    mask, pos = torch.ones_like(ids), torch.arange(ids.shape[1])[None].expand(6, -1)
    fast = FastLlama(model, "fp32")
    out = {}
    for kind in (_Slots, _StackedSlots):
        lora = kind(model)
        lora.segments = segments
        prefill, cache = fast(ids[:, :-1], mask[:, :-1], pos[:, :-1], None, lora)
        step, _ = fast(ids[:, -1:], mask, pos[:, -1:], cache, lora)
        out[kind] = (prefill, step)
    plain = fast(ids, mask, pos, None)[0]
    for got, ref in zip(out[_StackedSlots], out[_Slots], strict=True):
        assert torch.allclose(got, ref, atol=1e-4)
    assert not torch.allclose(out[_Slots][1], plain, atol=1e-2)  # the adapters do change the logits


def prompt_ids(tok):
    return torch.tensor([tok.apply_chat_template(CONVS[3], add_generation_prompt=True, tokenize=True)["input_ids"]])


def prefill_then_step(model, ids, weights):
    """(logits after prefilling all but the last prompt token, logits of one decode step on the last)."""
    mask, pos = torch.ones_like(ids), torch.arange(ids.shape[1])[None]
    fast = FastLlama(model, weights)
    logits, cache = fast(ids[:, :-1], mask[:, :-1], pos[:, :-1], None)
    return logits, fast(ids[:, -1:], mask, pos[:, -1:], cache)[0]  # the decode step takes `weights`


@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_half_weights_logits_stay_close_to_fp32(tiny, half):
    _, _, model, tok = tiny
    ids = prompt_ids(tok)
    out = {weights: prefill_then_step(model, ids, weights) for weights in ("fp32", half)}
    with torch.inference_mode():
        ref = model(input_ids=ids).logits[0, -1]
    assert torch.allclose(out["fp32"][1][0], ref, atol=1e-5)
    scale = ref.abs().max()
    tol = {"fp16": 1e-2, "bf16": 3e-2}[half] * scale  # bf16 keeps 8 bits of mantissa, fp16 11
    assert 0 < (out[half][1][0] - ref).abs().max() < tol
    assert 0 < (out[half][0] - out["fp32"][0]).abs().max() < tol
    long = torch.cat([ids] * 2, dim=1)  # a prefill of many tokens: fp16 runs the fp32 weights (the same KV),
    lmask, lpos = torch.ones_like(long), torch.arange(long.shape[1])[None]  # bf16 its own
    assert long.shape[1] >= 32
    kv = FastLlama(model, half)(long, lmask, lpos, None)[1].layers[-1].values
    kv32 = FastLlama(model, "fp32")(long, lmask, lpos, None)[1].layers[-1].values
    assert torch.equal(kv, kv32) == (half == "fp16")
    assert torch.allclose(kv, kv32, atol=tol / scale * kv32.abs().max())


def test_auto_weights_take_bf16_only_where_the_cpu_has_amx(tiny, monkeypatch):
    import lorapipe.models
    from lorapipe.decoding.llama import resolve_weights

    _, _, model, _ = tiny
    for amx, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(lorapipe.models, "cpu_has_amx", lambda amx=amx: amx)
        assert resolve_weights("auto") == expected == FastLlama(model, "auto").weights
    assert resolve_weights("int8") == "int8"
    with pytest.raises(ValueError, match="weights must be one of auto, bf16"):
        resolve_weights("fp8")


def test_eval_loss_on_the_fast_path_equals_transformers(tiny):
    """The A/B's eval loss (right-padded rows, assistant tokens only) on the fast path, base and adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorapipe.evaluate.metrics import eval_loss

    base, adapter, _, tok = tiny
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    rows = [{"messages": [*c, {"role": "assistant", "content": '{"name": "Ann Lee"}' * (i % 3 + 1)}]}
            for i, c in enumerate(CONVS)]
    losses = {}
    for arm in ("base", "tuned"):
        with peft.disable_adapter() if arm == "base" else contextlib.nullcontext():
            ref = eval_loss(peft, tok, rows, batch_size=3, fast=False)
            got = {w: eval_loss(peft, tok, rows, batch_size=3, weights=w) for w in ("fp32", "bf16")}
        assert got["fp32"]["tokens"] == ref["tokens"] > 0
        assert got["fp32"]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert got["bf16"]["loss"] == pytest.approx(ref["loss"], rel=2e-2)
        losses[arm] = ref["loss"]
    assert losses["base"] != pytest.approx(losses["tuned"], rel=1e-2)  # the adapter was applied (or not)


@pytest.mark.parametrize("layers", [None, [1]])
def test_both_arms_score_together_as_they_do_apart(tiny, tmp_path, layers):
    """eval_losses([base, adapter]) in one pass per batch, the unadapted lower layers run once (``[1]``)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorapipe.evaluate.metrics import eval_loss, eval_losses

    base, _, _, tok = tiny
    adapter = build_tiny_adapter(base, tmp_path / "upper", r=4, seed=5, b_std=0.3, layers_to_transform=layers,
                                 target_modules=["q_proj", "v_proj", "down_proj"])
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    rows = [{"messages": [*c, {"role": "assistant", "content": "Ann Lee " * (i % 3 + 1)}]} for i, c in enumerate(CONVS)]
    for fast in (True, False):
        together = eval_losses(peft, tok, rows, [None, "default"], batch_size=4, fast=fast)
        with peft.disable_adapter():
            apart = [eval_loss(peft, tok, rows, batch_size=4, fast=False)]
        apart.append(eval_loss(peft, tok, rows, batch_size=4, fast=False))
        for got, ref in zip(together, apart, strict=True):
            assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5) and got["tokens"] == ref["tokens"]
        assert together[0]["loss"] != pytest.approx(together[1]["loss"], rel=1e-3)


def test_int8_weights_decode_close_to_fp32(tiny):
    """int8 (opt-in): per-channel weights, activations quantized per step; prefill stays fp32."""
    _, _, model, tok = tiny
    step = {weights: prefill_then_step(model, prompt_ids(tok), weights)[1][0] for weights in ("fp32", "int8")}
    scale = step["fp32"].abs().max()
    err = (step["int8"] - step["fp32"]).abs().max()
    assert 0 < err < 0.1 * scale  # quantized, so not exact, but close
    got = texts(generate(model, tok, CONVS, max_new_tokens=12, weights="int8"))
    ref = texts(generate(model, tok, CONVS, max_new_tokens=12, weights="fp32"))
    assert sum(a == b for a, b in zip(got, ref, strict=True)) >= len(CONVS) // 2


def test_sampled_answers_do_not_depend_on_the_batch(tiny):
    _, adapter, model, tok = tiny
    a = generate(model, tok, CONVS, max_new_tokens=12, temperature=0.9, seed=5, batch_size=2)
    b = generate(model, tok, CONVS, max_new_tokens=12, temperature=0.9, seed=5, batch_size=7)
    c = generate(model, tok, CONVS, max_new_tokens=12, temperature=0.9, seed=6, batch_size=7)
    assert texts(a) == texts(b) != texts(c)


def test_stop_strings_cut_the_answer(tiny):
    _, _, model, tok = tiny
    full = generate(model, tok, CONVS[:1], max_new_tokens=24)[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), full
    cut = generate(model, tok, CONVS[:1], max_new_tokens=24, stop=[stop])[0].text
    assert cut == full[:full.index(stop)].strip()


@pytest.mark.parametrize("change, reason", [
    ({"attention_bias": True}, "linear biases"),
    ({"hidden_act": "gelu"}, "only SiLU MLPs"),
])
def test_other_models_keep_the_transformers_path(tmp_path, change, reason):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    base = build_tiny_model(tmp_path)
    cfg = LlamaConfig.from_pretrained(base)
    for k, v in change.items():
        setattr(cfg, k, v)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    assert reason in unsupported(model)
    assert reason in why_not(model)
    tok = AutoTokenizer.from_pretrained(base)
    assert texts(generate(model, tok, CONVS[:2], max_new_tokens=8)) == \
        texts(generate(model, tok, CONVS[:2], max_new_tokens=8, fast=False))


def test_gpt2_is_not_llama():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert "Llama-architecture" in unsupported(model)


def test_dora_adapters_keep_the_transformers_path(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, _, _, tok = tiny
    dora = build_tiny_adapter(base, tmp_path / "dora", r=4, seed=1, use_dora=True)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dora).eval()
    assert "DoRA" in why_not(peft)
    assert texts(generate(peft, tok, CONVS[:2], max_new_tokens=8)) == \
        texts(generate(peft, tok, CONVS[:2], max_new_tokens=8, fast=False))


def test_kv_layer_grows_in_place_and_copies_never_share_a_buffer():
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    layer = KVLayer(k, k + 100)
    buf = layer._k
    for step in range(HEADROOM + 5):  # past the headroom: the buffer grows once, keeping what it held
        new = torch.full((2, 1, 1, 2), float(step))
        keys, values = layer.append(new, new)
    assert keys.shape == (2, 1, 3 + HEADROOM + 5, 2) and layer._k is not buf
    assert torch.equal(keys[:, :, :3], k) and torch.equal(values[:, :, :3], k + 100)
    assert torch.equal(keys[:, :, -1], torch.full((2, 1, 2), float(HEADROOM + 4)))
    cache = KVCache([layer])
    twin = copy.copy(cache)
    twin.layers = [copy.copy(layer)]
    twin.layers[0].keys = twin.layers[0].keys[:, :, :2]  # assigning copies into a fresh buffer
    twin.layers[0].append(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert torch.equal(layer.keys[:, :, :3], k)  # the original is untouched
    cache.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys[0, :, :3], k[1]) and cache.get_seq_length() == 3 + HEADROOM + 5


def test_assembled_layers_equal_padding_joining_and_selecting():
    """kv.assemble (one copy) gives what left-padding, cat, index_select and trimming give."""
    from lorapipe.decoding.batch import _pad_seq, _picks
    from lorapipe.decoding.kv import assemble

    g = torch.Generator().manual_seed(0)
    a = KVLayer(torch.randn(3, 2, 5, 4, generator=g), torch.randn(3, 2, 5, 4, generator=g))
    b = KVLayer(torch.randn(2, 2, 8, 4, generator=g), torch.randn(2, 2, 8, 4, generator=g))
    a.append(torch.ones(3, 2, 1, 4), torch.ones(3, 2, 1, 4))  # 6 used columns, spare ones after them
    order, first = [3, 0, 4, 2], 1  # rows over a (0-2) then b (3-4); a's padding starts at column 0 of 8
    got = assemble([a, b], _picks(order, [3, 2]), 8, first)
    for name in ("keys", "values"):
        joined = torch.cat([_pad_seq(getattr(a, name), 8), _pad_seq(getattr(b, name), 8)])
        assert torch.equal(getattr(got, name), joined[order][:, :, first:])
    assert _picks(order, [3, 2]) == [(1, 0, 1), (0, 0, 1), (1, 1, 2), (0, 2, 3)]
    got.append(torch.zeros(4, 2, 1, 4), torch.zeros(4, 2, 1, 4))  # it has room to grow in place
    assert got.keys.shape == (4, 2, 8, 4)


def test_dropping_rows_moves_few_and_keeps_adapters_grouped():
    from types import SimpleNamespace

    from lorapipe.decoding.batch import _fill_holes

    rows = [SimpleNamespace(adapter=a) for a in "aaaabbbcc"]
    order = _fill_holes(rows, [0, 2, 3, 4, 6, 7, 8])  # rows 1 (a) and 5 (b) finished
    assert [rows[i].adapter for i in order] == list("aaabbcc")
    assert sorted(order) == [0, 2, 3, 4, 6, 7, 8] and order[0] == 0
    assert sum(src != dst for dst, src in enumerate(order)) <= 4  # not every row after the first hole
    layer = KVLayer(torch.arange(9.0).view(9, 1, 1, 1).expand(9, 1, 2, 1), torch.zeros(9, 1, 2, 1))
    layer.move_rows([(src, dst) for dst, src in enumerate(order) if src != dst], len(order))
    assert layer.keys[:, 0, 0, 0].tolist() == [float(i) for i in order]
