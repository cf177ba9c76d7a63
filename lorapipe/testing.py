"""Tiny random models for tests and benchmarks: no download, built in well under a second.

The tokenizer is a byte-level BPE trained in-process on a small corpus, with ChatML special tokens
and chat template (the same shape as SmolLM2's), so every code path that tokenizes, templates,
masks and generates runs exactly as it does with a real model.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Hi, I'm Ann Lee, reach me at ann.lee@example.com or +1 555 123 4567.",
    '{"name": "Ann Lee", "email": "ann.lee@example.com", "phone": "+1 555 123 4567"}',
    "Extract the contact in the message as JSON with keys name, email, phone.",
    "the quick brown fox jumps over the lazy dog 0123456789 ,.;:!?@+-()[]{}\"'",
    "Bonjour, je suis Zoé Müller-Ødegård. Écrivez à zoe@exemple.fr, tél. +33 6 12 34 56 78.",
]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int = 64, seed: int = 0,
                     tie_word_embeddings: bool = True) -> Path:
    """Write a random Llama with a ChatML tokenizer to ``out_dir``; return the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      num_key_value_heads=num_kv_heads, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=tie_word_embeddings)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def build_tiny_adapter(base_dir: str | Path, out_dir: str | Path, *, r: int = 4, seed: int = 0,
                       b_std: float = 0.5, target_modules: list[str] | None = None,
                       manifest: bool = True, **lora_kwargs) -> Path:
    """Write a LoRA adapter for the model in ``base_dir`` whose random B weights change its outputs.

    Different ``seed`` values give adapters with different greedy outputs; ``lora_kwargs`` go to
    ``peft.LoraConfig`` (e.g. ``use_rslora``, ``rank_pattern``); with ``manifest`` a
    ``manifest.json`` (stage ``train``, the base's identity in ``extra.base_model``) hashes its files.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorapipe.manifest import Manifest
    from lorapipe.models import resolve

    out_dir = Path(out_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    lora_kwargs = {"lora_alpha": 2 * r, "lora_dropout": 0.0, **lora_kwargs}
    cfg = LoraConfig(r=r, target_modules=target_modules or ["q_proj", "v_proj", "o_proj", "down_proj"], **lora_kwargs)
    torch.manual_seed(seed)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_(0.0, b_std)
    model.save_pretrained(out_dir)
    if manifest:
        Manifest(stage="train", config_hash=f"tiny-adapter-{seed}-{r}",
                 extra={"base_model": resolve(str(base_dir)).identity()}).save(out_dir)
    return out_dir


def build_tiny_gguf(model_dir: str | Path, out_file: str | Path) -> Path:
    """Write the tiny Llama in ``model_dir`` (from :func:`build_tiny_model`) as an f32 GGUF that llama.cpp
    loads: the tensors under llama.cpp's names (q/k rows permuted as its converter does), the hyper-
    parameters, and the byte-level BPE vocabulary. Tests compare llama.cpp against torch on it."""
    import gguf
    import numpy as np
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lorapipe.llamacpp import rope_permute, tensor_names

    model_dir, out_file = Path(model_dir), Path(out_file)
    cfg = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(out_file), arch="llama")
    w.add_name("lorapipe tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(len(tok))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tok.all_special_ids)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in vocab])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    names = tensor_names("llama", cfg.num_hidden_layers)
    for key, t in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = t.detach().float().numpy()
        if key.endswith("q_proj.weight"):
            data = rope_permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = rope_permute(data, cfg.num_key_value_heads)
        w.add_tensor(names.get_name(key, try_suffixes=(".weight",)), np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_file
