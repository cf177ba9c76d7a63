"""`lorapipe export --format gguf`: the llama.cpp LoRA GGUF layout read back with gguf-py, the scale
and q/k row order, the refusals (every message names the field and what to do), and the Modelfile.
llama.cpp itself runs the files in tests/integration/test_gguf_lora.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from lorapipe import export as ex
from lorapipe import llamacpp
from lorapipe.errors import ConfigError
from lorapipe.manifest import Manifest
from lorapipe.testing import build_tiny_adapter, build_tiny_model

SYSTEM = 'Extract the contact as JSON: {"name", "email"}.\nAnswer with JSON only.'


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gguf") / "base")


def with_system_prompt(adapter, system=SYSTEM):
    m = Manifest.load(adapter)
    m.config = {"task": {"system_prompt": system}}
    m.save(adapter)
    return adapter


def read(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    kv = {f.name: f.contents() for f in reader.fields.values()}
    tensors = {t.name: np.array(t.data).reshape([int(x) for x in reversed(t.shape)]) for t in reader.tensors}
    return kv, tensors


def test_layout_names_shapes_alpha_and_qk_rows(base, tmp_path):
    adapter = build_tiny_adapter(base, tmp_path / "a", r=4, lora_alpha=8,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"])
    m = ex.run(adapter, tmp_path / "out", mode="gguf")
    kv, tensors = read(tmp_path / "out" / llamacpp.ADAPTER_FILE)
    assert kv["general.type"] == "adapter" and kv["adapter.type"] == "lora"
    assert kv["general.architecture"] == "llama" and kv["adapter.lora.alpha"] == 8.0
    assert len(tensors) == 2 * 6 * 2 and m.metrics["gguf_pairs"] == 12 and m.metrics["gguf_folded_scales"] == 0
    peft = load_file(adapter / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.{}.lora_{}.weight"
    a, b = tensors["blk.1.attn_v.weight.lora_a"], tensors["blk.1.attn_v.weight.lora_b"]
    assert a.shape == (4, 32) and b.shape == (16, 4) and a.dtype == np.float32  # (r, in), (out, r): as PEFT
    np.testing.assert_array_equal(a, peft[key.format("self_attn.v_proj", "A")].numpy())
    np.testing.assert_array_equal(b, peft[key.format("self_attn.v_proj", "B")].numpy())
    np.testing.assert_array_equal(tensors["blk.0.ffn_down.weight.lora_a"],
                                  peft[key.replace("1", "0", 1).format("mlp.down_proj", "A")].numpy())
    # q (4 heads of 8) and k (2 kv heads): lora_b rows reordered per head as llama.cpp's converter does
    q_b = peft[key.format("self_attn.q_proj", "B")].numpy()
    got = tensors["blk.1.attn_q.weight.lora_b"]
    assert not np.array_equal(got, q_b)
    np.testing.assert_array_equal(got[0:8:2], q_b[0:4])  # head 0: rows i and i + 4 become neighbours
    np.testing.assert_array_equal(got[1:8:2], q_b[4:8])
    k_b = peft[key.format("self_attn.k_proj", "B")].numpy()
    np.testing.assert_array_equal(tensors["blk.1.attn_k.weight.lora_b"], llamacpp.rope_permute(k_b, 2))
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight.lora_a"], peft[key.format("self_attn.q_proj",
                                                                                        "A")].numpy())


def test_rslora_and_patterns_keep_every_modules_scale(base, tmp_path):
    adapter = build_tiny_adapter(base, tmp_path / "a", r=4, lora_alpha=6, use_rslora=True,
                                 target_modules=["v_proj", "o_proj"], rank_pattern={"o_proj": 2},
                                 alpha_pattern={"layers.1.self_attn.v_proj": 3})
    ex.run(adapter, tmp_path / "out", mode="gguf")
    kv, tensors = read(tmp_path / "out" / llamacpp.ADAPTER_FILE)
    alpha = kv["adapter.lora.alpha"]
    assert alpha == pytest.approx(6 * math.sqrt(4))  # llama.cpp's alpha / r == PEFT's alpha / sqrt(r)
    peft = load_file(adapter / "adapter_model.safetensors")

    def delta_llamacpp(name):
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        return (alpha / b.shape[1]) * b @ a

    def delta_peft(module, r, lora_alpha):
        a = peft[f"base_model.model.model.{module}.lora_A.weight"].numpy()
        b = peft[f"base_model.model.model.{module}.lora_B.weight"].numpy()
        return (lora_alpha / math.sqrt(r)) * b @ a

    for gguf_name, module, r, lora_alpha in [("blk.0.attn_v.weight", "layers.0.self_attn.v_proj", 4, 6),
                                             ("blk.1.attn_v.weight", "layers.1.self_attn.v_proj", 4, 3),
                                             ("blk.0.attn_output.weight", "layers.0.self_attn.o_proj", 2, 6)]:
        np.testing.assert_allclose(delta_llamacpp(gguf_name), delta_peft(module, r, lora_alpha), rtol=1e-5,
                                   atol=1e-6)


def test_f16_halves_the_tensors(base, tmp_path):
    adapter = build_tiny_adapter(base, tmp_path / "a")
    ex.run(adapter, tmp_path / "out", mode="gguf", gguf_dtype="f16")
    _, tensors = read(tmp_path / "out" / llamacpp.ADAPTER_FILE)
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}


BASE_CFG = {"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True}


@pytest.mark.parametrize("config,base_cfg,expected", [
    ({"use_dora": True}, BASE_CFG, "`use_dora` = True: DoRA"),
    ({"modules_to_save": ["lm_head"]}, BASE_CFG, "`modules_to_save` = ['lm_head']: fully trained modules"),
    ({"bias": "all"}, BASE_CFG, "`bias` = 'all': llama.cpp loads LoRA pairs only, not trained biases; retrain "
                                "with lora.bias: none"),
    ({"target_modules": ["q_proj", "embed_tokens"]}, BASE_CFG, "includes the token embeddings (embed_tokens): "
                                                              "embedding LoRA is not exported"),
    ({"target_modules": ["lm_head"]}, BASE_CFG, "includes lm_head, but the base ties it to the embeddings"),
    ({}, {"architectures": ["Qwen2ForCausalLM"]}, "base architecture 'Qwen2ForCausalLM' (config.json "
                                                  "`architectures`): GGUF adapter export supports"),
    ({"lora_bias": True}, BASE_CFG, "`lora_bias` = True"),
])
def test_problems_name_the_field_and_the_fix(config, base_cfg, expected):
    found = llamacpp.problems({"peft_type": "LORA", "target_modules": ["q_proj"], **config}, base_cfg)
    assert len(found) == 1 and expected in found[0], found
    assert "export merged (--merge)" in found[0] or "retrain" in found[0]


def test_untied_lm_head_is_fine_and_clean_adapter_has_no_problems():
    assert llamacpp.problems({"target_modules": ["q_proj", "lm_head"]}, {**BASE_CFG,
                                                                         "tie_word_embeddings": False}) == []


@pytest.mark.parametrize("kwargs,expected", [
    ({"use_dora": True}, "`use_dora` = True"),
    ({"bias": "lora_only"}, "`bias` = 'lora_only'"),
    ({"target_modules": ["q_proj", "embed_tokens"]}, "embedding LoRA is not exported"),
])
def test_export_refuses_before_writing(base, tmp_path, kwargs, expected):
    adapter = build_tiny_adapter(base, tmp_path / "a", **kwargs)
    out = tmp_path / "out"
    with pytest.raises(llamacpp.GgufUnsupported) as e:
        ex.run(adapter, out, mode="gguf")
    assert "llama.cpp cannot load this adapter as a LoRA GGUF" in str(e.value) and expected in str(e.value)
    assert e.value.exit_code == 2 and not out.exists()


def test_modelfile_for_a_local_base(base, tmp_path):
    adapter = with_system_prompt(build_tiny_adapter(base, tmp_path / "a"))
    out = tmp_path / "out"
    m = ex.run(adapter, out, mode="gguf")
    text = (out / llamacpp.MODELFILE).read_text()
    lines = text.splitlines()
    assert f"FROM {base.resolve()}" in lines and "ADAPTER ./adapter.gguf" in lines
    assert "is not a GGUF file" in text  # a Hugging Face base: says how to get a GGUF
    assert f'SYSTEM """{SYSTEM}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in lines and "PARAMETER temperature 0" in lines
    assert f'TEMPLATE """{llamacpp.CHATML_GO_TEMPLATE}"""' in text
    assert m.extra["system_prompt"] == SYSTEM and m.extra["base_gguf"] is None
    assert Manifest.load(out).outputs_intact(out) and set(m.outputs) == {"adapter.gguf", "Modelfile"}


def test_modelfile_for_a_gguf_base_and_other_templates(tmp_path):
    text = llamacpp.modelfile("/m/base.gguf", "./adapter.gguf", chat_template="{{ bos_token }}[INST]", system=None)
    assert text.splitlines()[2:4] == ["FROM /m/base.gguf", "ADAPTER ./adapter.gguf"]
    assert "TEMPLATE" not in text.replace("# the base's chat template", "") and "SYSTEM" not in text
    with pytest.raises(Exception, match='contains """'):
        llamacpp.modelfile("/b.gguf", "./a.gguf", chat_template=None, system='say """hi"""')


def test_chatml_go_template_renders_what_the_hf_template_does(base):
    """The Go template's text for [system, user] is the HF template's (checked by substituting the
    three loop values by hand: Go's text/template is not available here)."""
    from transformers import AutoTokenizer

    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Ann, ann@x.org"}]
    hf = AutoTokenizer.from_pretrained(base).apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    head, body_end = llamacpp.CHATML_GO_TEMPLATE.split("{{- range .Messages }}")
    body, tail = body_end.split("{{ end }}")
    rendered = head + "".join(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
                              for m in msgs) + tail
    assert rendered == hf


def test_cli_gguf_from_the_adapter_directory(base, tmp_path):
    from lorapipe.cli import app

    adapter = build_tiny_adapter(base, tmp_path / "a")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["--json", "export", str(adapter), "--out", str(out), "--format", "gguf"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["mode"] == "gguf" and data["metrics"]["gguf_pairs"] == 8 and (out / "adapter.gguf").is_file()
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    adapter.rename(run / "train" / "adapter")  # a run directory: its train/adapter is exported
    res = CliRunner().invoke(app, ["--json", "export", str(run), "--out", str(out), "--format", "gguf"])
    assert res.exit_code == 0 and json.loads(res.stdout)["metrics"]["gguf_pairs"] == 8, res.output
    adapter = run / "train" / "adapter"
    res = CliRunner().invoke(app, ["export", str(adapter), "--out", str(out), "--format", "gguf", "--merge"])
    assert isinstance(res.exception, ConfigError) and "Drop --merge" in str(res.exception)
    res = CliRunner().invoke(app, ["export", "--adapter", str(adapter), "--out", str(out), "--format", "onnx"])
    assert isinstance(res.exception, ConfigError) and "--format must be `hf` or `gguf`" in str(res.exception)


def test_gguf_file_of_a_base_spec(base, tmp_path):
    from lorapipe.models import EMBEDDED, gguf_file

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert gguf_file(str(f)) == f.resolve() and gguf_file(str(base)) is None and gguf_file("org/name") is None
    embedded = gguf_file("smollm2-135m-instruct")  # the package's file, found without converting it
    assert embedded is not None and embedded.name == EMBEDDED["smollm2-135m-instruct"]["gguf"] and embedded.is_file()


@pytest.mark.slow
def test_qk_row_order_is_the_embedded_gguf_files():
    """The embedded SmolLM2 GGUF was written by llama.cpp's converter: its q/k rows, dequantized, are
    lorapipe's (transformers') rows in the order :func:`llamacpp.rope_permute` gives; v is unpermuted."""
    import gguf

    from lorapipe import models

    info = models.resolve("smollm2-135m-instruct")
    cfg = llamacpp.read_base_config(info.path)
    tensors = {t.name: t for t in gguf.GGUFReader(str(models.gguf_file("smollm2-135m-instruct"))).tensors}
    hf = load_file(str(info.path / "model.safetensors"))
    for name, module, heads in [("attn_q", "q_proj", cfg["num_attention_heads"]),
                                ("attn_k", "k_proj", cfg["num_key_value_heads"]), ("attn_v", "v_proj", None)]:
        t = tensors[f"blk.5.{name}.weight"]
        from_gguf = gguf.quants.dequantize(t.data, t.tensor_type)
        ours = hf[f"model.layers.5.self_attn.{module}.weight"].float().numpy()
        np.testing.assert_array_equal(from_gguf, llamacpp.rope_permute(ours, heads) if heads else ours)
        if heads:
            assert not np.array_equal(from_gguf, ours)
