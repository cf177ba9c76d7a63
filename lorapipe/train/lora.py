"""The PEFT LoRA configuration, checked against the model's real module names."""

from __future__ import annotations

import difflib

from lorapipe.config import LoraConfig
from lorapipe.errors import ConfigError
from lorapipe.models import linear_module_names


def check_target_modules(cfg: LoraConfig, model) -> list[str] | str:
    """Return the target modules, or raise ConfigError naming each unknown one and the real ones."""
    if cfg.target_modules == "all-linear":
        return "all-linear"
    real = linear_module_names(model)
    problems = []
    for name in cfg.target_modules:
        if name not in real:
            close = difflib.get_close_matches(name, sorted(real), n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            problems.append(f"lora.target_modules: `{name}` is not a Linear module of this model; {hint}"
                            f"its Linear modules are: {', '.join(sorted(real))} (or use `all-linear`)")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) with lora.target_modules:", problems)
    return list(cfg.target_modules)


def check_layers(cfg: LoraConfig, model) -> list[int] | None:
    """Return ``layers_to_transform``, or raise ConfigError when it names a layer the model lacks."""
    if cfg.layers_to_transform is None:
        return None
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    missing = [i for i in cfg.layers_to_transform if n is not None and i >= n]
    if missing:
        raise ConfigError("1 problem with lora.layers_to_transform:",
                          [f"lora.layers_to_transform: layer(s) {missing} do not exist; this model has {n} "
                           f"decoder layers, numbered 0-{n - 1}"])
    return list(cfg.layers_to_transform)


def peft_config(cfg: LoraConfig, model):
    """Build ``peft.LoraConfig`` for a causal LM from lorapipe's ``lora`` section."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    return PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        target_modules=check_target_modules(cfg, model),
        lora_dropout=cfg.lora_dropout,
        bias=cfg.bias,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        layers_to_transform=check_layers(cfg, model),
    )


def apply_lora(cfg: LoraConfig, model):
    """Wrap ``model`` with a fresh LoRA adapter; only the adapter's weights are trainable."""
    from peft import get_peft_model

    return get_peft_model(model, peft_config(cfg, model))
