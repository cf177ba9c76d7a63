"""QLoRA: train the adapter on a 4-bit (NF4, double quantization) or 8-bit base, with bitsandbytes.

``lora.quantization: 4bit | 8bit`` loads the base model quantized on this rank's GPU, computes in
bf16 (fp16 on GPUs without bf16) and runs PEFT's ``prepare_model_for_kbit_training`` (norms and head
in fp32, input grads on, optional gradient checkpointing) before the LoRA layers go on. The adapter
it writes is an ordinary full-precision PEFT adapter: serving and merging load the base in full
precision (see ``lorapipe export``), never the quantized one.

Only CUDA machines can do this; elsewhere the train stage stops with a ConfigError that says to
remove ``lora.quantization``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.errors import ConfigError

__all__ = ["bnb_config", "check_quantization", "load_quantized"]


def check_quantization(cfg: PipelineConfig, cuda: bool | None = None) -> list[str]:
    """Problems that keep ``lora.quantization`` from working here (empty: go ahead)."""
    q = cfg.lora.quantization
    if not q:
        return []
    problems = []
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        problems.append(f"lora.quantization: `{q}` (QLoRA) needs a CUDA GPU with bitsandbytes; remove it to "
                        "train the full-precision base on this machine")
    elif importlib.util.find_spec("bitsandbytes") is None:
        problems.append(f"lora.quantization: `{q}` needs the bitsandbytes package: pip install 'lorapipe[qlora]' "
                        "(or pip install bitsandbytes), or remove lora.quantization")
    if q == "8bit" and cfg.distributed.launcher == "accelerate" and cfg.distributed.strategy == "fsdp":
        problems.append("lora.quantization: `8bit` does not work with distributed.strategy `fsdp`; use `4bit` "
                        "(FSDP-QLoRA) or strategy `ddp`")
    if cfg.lora.use_dora and q == "8bit":
        problems.append("lora.use_dora with lora.quantization `8bit` is not supported by PEFT; use `4bit`")
    return problems


def bnb_config(quantization: str, compute_dtype: Any, quant_storage: Any = None):
    """``BitsAndBytesConfig`` for QLoRA: NF4 with double quantization (4bit) or LLM.int8 (8bit)."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    kw: dict[str, Any] = {}
    if quant_storage is not None:
        kw["bnb_4bit_quant_storage"] = quant_storage
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, **kw)


def load_quantized(cfg: PipelineConfig, info):
    """Load ``info``'s causal LM quantized on this rank's GPU and prepare it for k-bit training."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from lorapipe.errors import ModelError

    problems = check_quantization(cfg)
    if problems:
        raise ConfigError("QLoRA cannot run on this machine:", problems)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    kw: dict[str, Any] = {"dtype": compute}
    if fsdp:
        # FSDP shards the quantized weights itself: they must be stored in the compute dtype, and
        # the model is placed by FSDP (cpu_ram_efficient_loading), not by a device_map.
        kw["quantization_config"] = bnb_config(cfg.lora.quantization, compute, quant_storage=compute)
    else:
        # DDP: one full quantized copy per rank, on that rank's GPU.
        kw["quantization_config"] = bnb_config(cfg.lora.quantization, compute)
        kw["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model = AutoModelForCausalLM.from_pretrained(info.path, **kw)
    except (OSError, ValueError, ImportError) as e:
        raise ModelError(f"{info.path}: cannot load the model {cfg.lora.quantization}-quantized: {e}") from None
    if not fsdp:
        # Under FSDP the upcast of norms to fp32 would mix dtypes inside one flat parameter.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
