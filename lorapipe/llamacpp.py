"""llama.cpp's formats: a PEFT LoRA adapter as a llama.cpp LoRA-adapter GGUF, and the Ollama Modelfile.

The adapter file is laid out as llama.cpp's own ``convert_lora_to_gguf.py`` writes it and as
``src/llama-adapter.cpp`` reads it:

* metadata: ``general.architecture`` (the base's, e.g. ``llama``; llama.cpp refuses another arch),
  ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` (f32);
* for every adapted base tensor, named as llama.cpp names it (``blk.3.attn_q.weight``), a pair
  ``NAME.lora_a`` of shape ``(r, in_features)`` and ``NAME.lora_b`` of shape ``(out_features, r)``
  (numpy order; ggml's ``ne`` is the reverse). PEFT's ``lora_A.weight`` / ``lora_B.weight`` have
  exactly these shapes, so nothing is transposed;
* llama.cpp scales each pair by ``alpha / r``, ``r`` read from ``lora_b`` (``alpha == 0`` means 1).
  PEFT scales by ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA, per module with
  ``rank_pattern`` / ``alpha_pattern``. The file's alpha is the adapter's scale times its default
  rank (``lora_alpha * sqrt(r)`` under rsLoRA), and any module whose PEFT scale still differs from
  llama.cpp's gets the ratio folded into its ``lora_b``, so every module's delta is PEFT's exactly;
* Llama's converter reorders the rows of ``q_proj`` and ``k_proj`` for ggml's rotary embedding
  (each head's two halves interleaved); rows are outputs, so ``lora_b`` of those modules gets the
  same reordering and ``lora_a`` none.

What llama.cpp cannot apply is refused up front, all problems in one message (:func:`problems`):
DoRA, ``modules_to_save``, trained biases, embedding LoRA, an untied-head-less ``lm_head`` target,
and architectures other than the Llama family.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.adapter_files import VerifiedAdapter, load_weights
from lorapipe.errors import ModelError

ADAPTER_FILE = "adapter.gguf"
MODELFILE = "Modelfile"
# HF architecture -> (llama.cpp arch name, whether its converter permutes q/k rows). Only the Llama
# family is written: its conversion is checked against llama.cpp in tests/; others would be guesses.
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "MistralForCausalLM": ("llama", True)}
DTYPES = ("f32", "f16")
# adapter_config.json fields that change what the adapter computes in ways llama.cpp does not model:
# field -> what to do instead. Each is refused when set (truthy).
_UNSUPPORTED_FIELDS = {
    "use_dora": "DoRA's magnitude vectors have no llama.cpp equivalent; retrain with lora.use_dora: false, "
                "or export merged (--merge) and convert the merged model with llama.cpp's convert_hf_to_gguf.py",
    "modules_to_save": "fully trained modules are not LoRA pairs; retrain without modules_to_save, or export "
                       "merged (--merge) and convert the merged model",
    "lora_bias": "llama.cpp applies no bias in a LoRA pair; retrain with lora_bias false, or export merged",
    "trainable_token_indices": "trained token rows are not LoRA pairs; export merged (--merge) instead",
    "fan_in_fan_out": "transposed (Conv1D) weights are not a Llama layout; export merged (--merge) instead",
    "alora_invocation_tokens": "activated LoRA is not exported; export merged (--merge) instead",
    "target_parameters": "LoRA on bare parameters (MoE experts) is not exported; export merged instead",
}


class GgufUnsupported(ModelError):
    """The adapter uses something llama.cpp cannot load; the message lists every such field."""

    exit_code = 2


@dataclass
class GgufAdapter:
    """What :func:`write_adapter` wrote."""

    path: Path
    architecture: str
    alpha: float  # adapter.lora.alpha as written
    rank: int
    pairs: int  # base tensors adapted (each has a .lora_a and a .lora_b)
    folded: int  # pairs whose lora_b carries a scale correction (see the module docstring)
    dtype: str


def architecture(base_config: dict[str, Any]) -> str | None:
    archs = base_config.get("architectures") or []
    return str(archs[0]) if archs else None


def problems(config: dict[str, Any], base_config: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    """Why llama.cpp could not apply this adapter on this base (empty when it can): field + what to do."""
    found = []
    arch = architecture(base_config)
    if arch not in ARCHITECTURES:
        found.append(f"base architecture {arch!r} (config.json `architectures`): GGUF adapter export supports "
                     f"{', '.join(sorted(ARCHITECTURES))}; export merged (--merge) and convert the merged model "
                     "with llama.cpp's convert_hf_to_gguf.py")
    for field, todo in _UNSUPPORTED_FIELDS.items():
        if config.get(field):
            found.append(f"adapter_config.json `{field}` = {config[field]!r}: {todo}")
    if config.get("bias", "none") != "none":
        found.append(f"adapter_config.json `bias` = {config['bias']!r}: llama.cpp loads LoRA pairs only, not "
                     "trained biases; retrain with lora.bias: none, or export merged (--merge)")
    if config.get("peft_type", "LORA") != "LORA":
        found.append(f"adapter_config.json `peft_type` = {config['peft_type']!r}: only LORA is exported")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    names = set(targets) | {_module_of(k) for k in keys or []}
    if names & {"embed_tokens", "wte", "word_embeddings"} or any("lora_embedding" in k for k in keys or []):
        found.append("adapter_config.json `target_modules` includes the token embeddings (embed_tokens): "
                     "embedding LoRA is not exported; retrain without embed_tokens, or export merged (--merge)")
    if "lm_head" in names and base_config.get("tie_word_embeddings", False):
        found.append("adapter_config.json `target_modules` includes lm_head, but the base ties it to the "
                     "embeddings and llama.cpp then has no output tensor to adapt; retrain without lm_head, or "
                     "export merged (--merge)")
    return found


def _module_of(key: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> ``q_proj``."""
    parts = key.split(".")
    for marker in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
        if marker in parts:
            return parts[parts.index(marker) - 1]
    return parts[-2] if len(parts) > 1 else key


def rope_permute(rows: Any, n_head: int) -> Any:
    """Reorder output rows as llama.cpp's Llama converter does for q/k: per head, the first and second
    halves of the head's rows are interleaved (row ``h, j, i`` of shape ``(head, 2, dim/2)`` moves to
    ``h, i, j``), so ggml's rotary embedding pairs neighbouring values where HF pairs ``i`` and ``i + d/2``."""
    out = rows.shape[0]
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def tensor_names(arch: str, n_layers: int) -> Any:
    """gguf-py's HF -> llama.cpp tensor name map for ``arch`` (``llama``)."""
    import gguf

    by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    return gguf.get_tensor_name_map(by_name[arch], n_layers)


def _scale(config: dict[str, Any], module_key: str, rank: int) -> float:
    """PEFT's scaling for one module: alpha / r, or alpha / sqrt(r) with rsLoRA (patterns honoured)."""
    alpha = float(config.get("lora_alpha", 8))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module_key):  # PEFT matches a pattern as a key suffix
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def write_adapter(adapter: VerifiedAdapter, base_config: dict[str, Any], out_file: Path, *, dtype: str = "f32",
                  name: str = "lorapipe adapter") -> GgufAdapter:
    """Write ``adapter`` as a llama.cpp LoRA-adapter GGUF at ``out_file`` (refusing what llama.cpp cannot load)."""
    import gguf
    import numpy as np
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"GGUF dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    weights = load_weights(adapter)
    if found := problems(adapter.config, base_config, list(weights)):
        raise GgufUnsupported(f"{adapter.path}: llama.cpp cannot load this adapter as a LoRA GGUF:\n"
                              + "\n".join(f"  - {p}" for p in found))
    arch_name, permute = ARCHITECTURES[str(architecture(base_config))]
    n_head = int(base_config["num_attention_heads"])
    n_kv = int(base_config.get("num_key_value_heads") or n_head)
    names = tensor_names(arch_name, int(base_config["num_hidden_layers"]))

    pairs: dict[str, dict[str, Any]] = {}
    for key, t in weights.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if m is None:
            raise GgufUnsupported(f"{adapter.weights}: tensor {key!r} is not a LoRA A/B weight; llama.cpp loads "
                                  "LoRA pairs only. Export merged (--merge) instead")
        pairs.setdefault(m.group(1), {})[m.group(2)] = t.detach().to(torch.float32)
    rank = int(adapter.config.get("r") or 8)
    default_scale = _scale(adapter.config, "", rank)
    alpha = default_scale * rank  # llama.cpp: alpha / r == PEFT's scale for a module of the default rank
    writer_rows: list[tuple[str, Any]] = []
    folded = 0
    for module, ab in sorted(pairs.items(), key=lambda kv: _natural(kv[0])):
        if set(ab) != {"A", "B"}:
            raise GgufUnsupported(f"{adapter.weights}: {module} has lora_{next(iter(ab))} but not its partner; "
                                  "the adapter file is incomplete, re-export or re-train it")
        a, b = ab["A"], ab["B"]
        r = int(b.shape[1])
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r:
            raise GgufUnsupported(f"{adapter.weights}: {module}: lora_A {tuple(a.shape)} and lora_B "
                                  f"{tuple(b.shape)} are not a rank-{r} pair of a Linear layer")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise GgufUnsupported(f"{adapter.weights}: module {module!r} has no llama.cpp tensor in the "
                                  f"{arch_name} architecture; retrain without it in lora.target_modules, or "
                                  "export merged (--merge)")
        wanted = _scale(adapter.config, module, r)
        applied = alpha / r if alpha else 1.0
        if not math.isclose(wanted, applied, rel_tol=1e-6):
            b = b * (wanted / applied)
            folded += 1
        if permute and module.endswith((".q_proj", ".k_proj")):
            b = rope_permute(b, n_head if module.endswith(".q_proj") else n_kv)
        np_dtype = np.float32 if dtype == "f32" else np.float16
        writer_rows.append((f"{target}.lora_a", a.numpy().astype(np_dtype)))
        writer_rows.append((f"{target}.lora_b", b.contiguous().numpy().astype(np_dtype)))
    if not writer_rows:
        raise GgufUnsupported(f"{adapter.weights}: no LoRA weights in the adapter; nothing to export")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_file), arch=arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    for tensor_name, data in writer_rows:
        writer.add_tensor(tensor_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufAdapter(out_file, arch_name, float(alpha), rank, len(writer_rows) // 2, folded, dtype)


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


# --- Ollama -----------------------------------------------------------------------------------------

# ChatML (SmolLM2, Qwen...) in Ollama's Go template language. Ollama puts the Modelfile's SYSTEM (or the
# request's own system message) into .Messages, so one loop renders the same text as the HF template:
# "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n".
CHATML_GO_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")


def is_chatml(chat_template: str | None) -> bool:
    return bool(chat_template) and "<|im_start|>" in str(chat_template) and "<|im_end|>" in str(chat_template)


def _quote(text: str) -> str:
    """A Modelfile value: triple-quoted, which keeps newlines and double quotes as they are."""
    if '"""' in text:
        raise ModelError('the system prompt contains """, which an Ollama Modelfile cannot quote; rephrase it')
    return f'"""{text}"""'


def modelfile(base: str, adapter_file: str, *, chat_template: str | None, system: str | None,
              note: str | None = None) -> str:
    """An Ollama Modelfile applying ``adapter_file`` on ``base`` (a GGUF path), with the chat template,
    the task's system prompt, greedy decoding (as lorapipe's eval) and the template's stop tokens."""
    lines = ["# Ollama: ollama create NAME -f Modelfile && ollama run NAME", "# written by `lorapipe export "
             "--format gguf`; the adapter is a llama.cpp LoRA GGUF for exactly this base model"]
    if note:
        lines.append(f"# {note}")
    lines += [f"FROM {base}", f"ADAPTER {adapter_file}"]
    if is_chatml(chat_template):
        lines.append(f"TEMPLATE {_quote(CHATML_GO_TEMPLATE)}")
        lines += [f'PARAMETER stop "{s}"' for s in CHATML_STOPS]
    else:
        lines.append("# the base's chat template is not ChatML: Ollama takes the template stored in the base GGUF")
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


BASE_DTYPES = ("auto", "as-is", "f16", "f32")


def open_llama(model_path: str | Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path, **kwargs)`` as lorapipe's tests and benches open it.

    On a CPU with AMX, llama.cpp repacks quantised weights into its AMX buffer type; the
    llama-cpp-python 0.3.x built here then crashes (SIGSEGV in the first decode, with or without an
    adapter, on the embedded Q4_1 SmolLM2). There the extra buffer types are turned off (llama.cpp's
    ``use_extra_bufts``, ``--no-repack`` in its CLI): the plain CPU kernels, a little slower."""
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    from lorapipe.models import cpu_has_amx

    if not cpu_has_amx():
        return llama_cpp.Llama(model_path=str(model_path), **kwargs)
    default = lib.llama_model_default_params

    def without_repack() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_repack
    try:
        return llama_cpp.Llama(model_path=str(model_path), **kwargs)
    finally:
        lib.llama_model_default_params = default


def quantized(gguf_path: Path) -> bool:
    """Whether a GGUF file holds quantised (neither f32 nor f16/bf16) tensors."""
    import gguf

    plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
    return any(t.tensor_type not in plain for t in gguf.GGUFReader(str(gguf_path)).tensors)


def write_dequantized_base(src: Path, out_file: Path, dtype: str) -> int:
    """Copy the GGUF ``src`` with its quantised weights stored as ``dtype`` (``f16`` or ``f32``); returns
    the number of tensors converted.

    lorapipe trains on the dequantised weights of a quantised GGUF (e.g. the embedded Q4_1), in fp32;
    llama.cpp on the Q4_1 file multiplies 4-bit weights with 8-bit-quantised activations, so a tuned
    answer can drift by a token. The same weights in f16/f32 leave only float rounding. Metadata
    (tokenizer, chat template, hyper-parameters) is copied unchanged but the file type."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(out_file), arch=arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), kind)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    target = np.float16 if dtype == "f16" else np.float32
    converted = 0
    for t in reader.tensors:
        data = t.data
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(target)
            converted += 1
        writer.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return converted


def read_base_config(model_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir / 'config.json'}: cannot read the base model's config ({e})") from None


__all__ = [
    "ADAPTER_FILE",
    "ARCHITECTURES",
    "BASE_DTYPES",
    "CHATML_GO_TEMPLATE",
    "MODELFILE",
    "GgufAdapter",
    "GgufUnsupported",
    "is_chatml",
    "modelfile",
    "open_llama",
    "problems",
    "quantized",
    "read_base_config",
    "rope_permute",
    "tensor_names",
    "write_adapter",
    "write_dequantized_base",
]
