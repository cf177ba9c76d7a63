"""Exported GGUF adapters in real llama.cpp (llama-cpp-python, the `llamacpp` extra).

Fast: a tiny random Llama written as an f32 GGUF, with LoRA adapters exported by lorapipe: llama.cpp's
logits equal PEFT's (plain, rsLoRA with rank/alpha patterns, f16), and an export without the q/k row
reordering does not, so the comparison sees the layout. Slow: the embedded SmolLM2 GGUF (Q4_1, written
out in f16 by the export) with
an adapter trained here for a few steps: greedy answers on held-out rows match lorapipe's own and
differ from the base's.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from lorapipe import export as ex
from lorapipe import llamacpp
from lorapipe.testing import build_tiny_adapter, build_tiny_gguf, build_tiny_model

llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install -e '.[llamacpp]' "
                                "(scripts/setup.sh installs it)")

IDS = [1, 5, 17, 42, 99, 3, 250, 7, 64, 128, 11, 300]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf-lora")
    base = build_tiny_model(d / "base")
    return base, build_tiny_gguf(base, d / "base.gguf")


def llamacpp_logits(model_gguf, lora_gguf=None) -> np.ndarray:
    # an f32 KV cache (llama.cpp's default is f16), so that the comparison with torch is tight
    llm = llamacpp.open_llama(model_gguf, lora_path=str(lora_gguf) if lora_gguf else None,
                          n_ctx=64, n_batch=64, n_threads=1, logits_all=True, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(IDS)
        return np.array(llm.scores[:len(IDS)], dtype=np.float32)
    finally:
        llm.close()


def torch_logits(base, adapter=None) -> np.ndarray:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.inference_mode():
        return model(input_ids=torch.tensor([IDS])).logits[0].numpy()


def test_tiny_base_gguf_matches_transformers(tiny):
    base, base_gguf = tiny
    np.testing.assert_allclose(llamacpp_logits(base_gguf), torch_logits(base), atol=1e-5, rtol=0)  # seen: 2.4e-7


ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("kwargs,dtype,atol", [
    ({"r": 4, "lora_alpha": 8, "target_modules": ALL}, "f32", 1e-5),  # seen: 5e-7
    ({"r": 8, "lora_alpha": 4, "use_rslora": True, "target_modules": ALL, "rank_pattern": {"k_proj": 2},
      "alpha_pattern": {"layers.1.mlp.down_proj": 16}}, "f32", 1e-5),  # seen: 8e-7
    ({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}, "f16", 2e-3),  # seen: 1.8e-4
], ids=["plain", "rslora-patterns", "f16"])
def test_exported_adapter_in_llamacpp_matches_peft(tiny, tmp_path, kwargs, dtype, atol):
    base, base_gguf = tiny
    adapter = build_tiny_adapter(base, tmp_path / "adapter", seed=5, b_std=0.3, **kwargs)
    ex.run(adapter, tmp_path / "out", mode="gguf", gguf_dtype=dtype)
    got = llamacpp_logits(base_gguf, tmp_path / "out" / llamacpp.ADAPTER_FILE)
    want = torch_logits(base, adapter)
    assert np.abs(want - torch_logits(base)).max() > 0.2  # the adapter changes the logits by 0.5-1...
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)  # ...and llama.cpp applies exactly that change
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_without_the_qk_row_order_llamacpp_disagrees(tiny, tmp_path, monkeypatch):
    """The comparison above can fail: q/k adapters exported in HF's row order give other logits."""
    base, base_gguf = tiny
    adapter = build_tiny_adapter(base, tmp_path / "adapter", seed=5, b_std=0.3, target_modules=["q_proj", "k_proj"])
    monkeypatch.setitem(llamacpp.ARCHITECTURES, "LlamaForCausalLM", ("llama", False))
    ex.run(adapter, tmp_path / "out", mode="gguf")
    got = llamacpp_logits(base_gguf, tmp_path / "out" / llamacpp.ADAPTER_FILE)
    assert np.abs(got - torch_logits(base, adapter)).max() > 1e-2  # seen: 0.1


def _quantized_copy(src, out, qtype):
    """``src`` (f32 GGUF) with every 2-D weight quantised to ``qtype``, as a quantised release would be."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(out), arch="llama")
    for name, field in reader.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            if field.types[0] == gguf.GGUFValueType.ARRAY:
                w.add_array(name, field.contents())
            else:
                w.add_key_value(name, field.contents(), field.types[0])
    for t in reader.tensors:
        data = np.array(t.data)
        if data.ndim == 2:
            w.add_tensor(t.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def test_export_writes_the_quantized_base_unquantized_beside_the_adapter(tiny, tmp_path):
    """--gguf-base f32: the quantised base's own weights, dequantised, with its metadata; llama.cpp runs
    it and the adapter as PEFT does on those weights (the file a quantised release gives would not)."""
    import gguf

    base, base_gguf = tiny
    q8 = _quantized_copy(base_gguf, tmp_path / "base-q8.gguf", gguf.GGMLQuantizationType.Q8_0)
    from lorapipe.models import resolve

    on_q8 = resolve(str(q8)).path  # what lorapipe trains on: the GGUF's weights, dequantised
    adapter = build_tiny_adapter(on_q8, tmp_path / "adapter", seed=5, b_std=0.3, r=4, lora_alpha=8, target_modules=ALL)
    m = ex.run(adapter, tmp_path / "out", mode="gguf", base=str(q8), gguf_base="f32")
    written = tmp_path / "out" / "base-f32.gguf"
    assert m.extra["base_gguf"] == str(written.resolve())
    assert "FROM ./base-f32.gguf" in (tmp_path / "out" / llamacpp.MODELFILE).read_text()
    src, out = gguf.GGUFReader(str(q8)), gguf.GGUFReader(str(written))
    assert {k for k in src.fields if k != "general.file_type"} == {k for k in out.fields if k != "general.file_type"}
    assert src.fields["tokenizer.ggml.tokens"].contents() == out.fields["tokenizer.ggml.tokens"].contents()
    for a, b in zip(src.tensors, out.tensors, strict=True):
        assert a.name == b.name and b.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(b.data), gguf.quants.dequantize(a.data, a.tensor_type))
    del src, out  # their memory maps of the files
    got = llamacpp_logits(written)
    plain = llamacpp_logits(base_gguf)
    assert np.abs(got - plain).max() < 0.05  # a working model: the f32 one, to Q8 error
    assert np.abs(llamacpp_logits(written, tmp_path / "out" / llamacpp.ADAPTER_FILE) - got).max() > 0.2


# --- the embedded SmolLM2 GGUF --------------------------------------------------------------------

SYSTEM = "Reply with the sender's first name only, as: Name: <first name>."
FIRST = ["Ann", "Bob", "Carla", "Dmitri", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
         "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Ximena",
         "Yusuf", "Zoe", "Aiko", "Bruno", "Chloe", "Dario", "Emma", "Farid", "Gino", "Hana", "Ivan", "Julia"]
LAST = ["Lee", "Stone", "Diaz", "Ivanov", "Kaya", "Adeyemi", "Berg", "Sato", "Ruiz", "Weber", "Demir", "Novak"]


def rows(names):
    out = []
    for i, first in enumerate(names):
        msg = [f"Hi, {first} {LAST[i % len(LAST)]} here, can we meet on Tuesday?",
               f"Thanks for the update.\n-- {first} {LAST[(i + 3) % len(LAST)]}",
               f"Please call me back, this is {first}."][i % 3]
        out.append({"messages": [{"role": "user", "content": msg},
                                 {"role": "assistant", "content": f"Name: {first}."}]})
    return out


UPPER = ", ".join(str(i) for i in range(18, 30))  # SmolLM2-135M has 30 layers: training the top 12 is faster


@pytest.mark.slow
def test_smollm2_adapter_in_llamacpp_answers_as_lorapipe(tmp_path):
    from lorapipe import generation, models
    from lorapipe.config import load_config
    from lorapipe.train import trainer

    train_rows, eval_rows = rows(FIRST[:16]), rows(FIRST[16:])  # 16 to train on, 20 held out
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        task: {{name: gguf, description: d, system_prompt: "{SYSTEM}"}}
        base_model: smollm2-135m-instruct
        data: {{train_file: train.jsonl}}
        lora: {{r: 8, lora_alpha: 16, lora_dropout: 0.0, layers_to_transform: [{UPPER}]}}
        train: {{max_steps: 16, per_device_train_batch_size: 4, gradient_accumulation_steps: 1,
                learning_rate: 2.0e-3, warmup_ratio: 0.0, load_best_model_at_end: false, save_steps: 1000}}
        """))
    cfg = load_config(tmp_path / "pipeline.yaml")
    trainer.run(cfg, tmp_path / "train.jsonl", None, tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    m = ex.run(adapter, tmp_path / "gguf", mode="gguf")
    base_gguf = m.extra["base_gguf"]  # the embedded Q4_1 GGUF's weights in f16 (export's default for a quantised base)
    assert base_gguf == str((tmp_path / "gguf" / "base-f16.gguf").resolve())
    assert "FROM ./base-f16.gguf" in (tmp_path / "gguf" / llamacpp.MODELFILE).read_text()

    model, tok, info = models.load("smollm2-135m-instruct")
    convs = [[{"role": "system", "content": SYSTEM}, r["messages"][0]] for r in eval_rows]
    tuned = models.load_adapter(model, adapter, base=info)
    ours = [g.text for g in generation.generate(tuned, tok, convs, max_new_tokens=10)]
    assert sum(a.startswith("Name: ") for a in ours) >= len(ours) - 2, ours  # the adapter learnt the task

    prompts = generation.render_prompts(tok, convs)
    theirs, theirs_base = [], []
    for lora, answers in ((tmp_path / "gguf" / llamacpp.ADAPTER_FILE, theirs), (None, theirs_base)):
        llm = llamacpp.open_llama(base_gguf, lora_path=str(lora) if lora else None, n_ctx=512,
                              n_threads=2, verbose=False)
        try:
            for p in prompts:
                ids = tok(p, add_special_tokens=False)["input_ids"]
                # llama.cpp's own tokenizer reads the rendered prompt (what Ollama sends) as lorapipe does
                assert llm.tokenize(p.encode(), add_bos=False, special=True) == ids
                out = llm.create_completion(ids, max_tokens=10, temperature=0.0, top_k=1)
                answers.append(out["choices"][0]["text"].strip())
        finally:
            llm.close()
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"llama.cpp + exported adapter vs lorapipe: {same}/{len(ours)} identical greedy answers")
    assert same >= 0.95 * len(ours), list(zip(ours, theirs))
    assert sum(a != b for a, b in zip(theirs, theirs_base)) >= 0.9 * len(ours), list(zip(theirs, theirs_base))
