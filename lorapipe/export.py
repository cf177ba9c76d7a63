"""Export a trained adapter: merged into its base model (parity-checked), or as a plain PEFT adapter.

``merge``: the base is loaded in fp32, the adapter applied with ``PeftModel.from_pretrained`` and
folded in with ``merge_and_unload``; the result is saved as a standard safetensors model plus the
tokenizer, loaded back from disk, and its logits compared with the unmerged model's on a few chat
prompts. The largest absolute difference is recorded (``metrics.parity_max_abs_diff``) and must stay
under ``tolerance`` (1e-4 for fp32), else nothing is written.

``adapter``: the adapter's config and weights (always as safetensors) with a fresh manifest,
loadable by ``peft.PeftModel.from_pretrained`` and by ``vllm serve BASE --enable-lora
--lora-modules NAME=DIR``; features vLLM cannot serve are listed in ``extra.vllm_problems``.

Pickle (``.bin``) weights are refused unless ``allow_pickle``. The base model comes from the adapter
manifest's ``extra.base_model.spec``, else ``adapter_config.json``'s ``base_model_name_or_path``,
unless ``base`` overrides it. The output directory is written atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from lorapipe.errors import ModelError
from lorapipe.manifest import MANIFEST, Manifest, atomic_dir, sha256_file, sha256_json
from lorapipe.serve.adapters import (
    CONFIG_FILE,
    SAFE_WEIGHTS,
    VerifiedAdapter,
    load_weights,
    verify_adapter_dir,
)

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
PARITY_PROMPTS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [{"role": "system", "content": "Answer in JSON."},
     {"role": "user", "content": "Extract the contact: Ann Lee, ann.lee@example.com, +1 555 123 4567"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]
# what vLLM's LoRA loader does not take (vllm/lora/models.py and peft_helper.py)
_VLLM_MODULES_TO_SAVE = {"lm_head", "embed_tokens"}


def base_spec(adapter: VerifiedAdapter, override: str | None = None) -> str:
    """Which base model the adapter belongs to: ``override``, the manifest's record, or its config."""
    if override:
        return override
    spec = (adapter.base_identity or {}).get("spec") or adapter.config.get("base_model_name_or_path")
    if not spec:
        raise ModelError(f"{adapter.path}: neither {MANIFEST} (extra.base_model.spec) nor {CONFIG_FILE} "
                         "(base_model_name_or_path) names the base model; pass --base SPEC")
    return str(spec)


def vllm_problems(config: dict[str, Any]) -> list[str]:
    """Reasons vLLM's ``--lora-modules`` would refuse this adapter (empty when it would load it)."""
    problems = []
    if config.get("use_dora"):
        problems.append("DoRA (use_dora) is not supported by vLLM; export merged instead")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r}: vLLM loads LoRA weights only; train with bias 'none'")
    extra = set(config.get("modules_to_save") or []) - _VLLM_MODULES_TO_SAVE
    if extra:
        problems.append(f"modules_to_save {sorted(extra)}: vLLM only takes lm_head/embed_tokens")
    if config.get("layers_to_transform") is not None:
        problems.append("layers_to_transform is not supported by vLLM")
    return problems


def run(adapter: str | Path, out: str | Path, *, mode: Literal["merge", "adapter"] = "merge",
        base: str | None = None, allow_pickle: bool = False, tolerance: float = FP32_TOLERANCE,
        prompts: list[list[dict[str, str]]] | None = None) -> Manifest:
    """Export ``adapter`` to ``out`` (see the module docstring); return the written manifest."""
    if mode not in ("merge", "adapter"):
        raise ModelError(f"export mode must be `merge` or `adapter`, got {mode!r}")
    adapter, out = Path(adapter), Path(out)
    if out.resolve() == adapter.resolve() or adapter.resolve() in out.resolve().parents:
        raise ModelError(f"--out {out} is the adapter directory or inside it; choose another directory")
    verified = verify_adapter_dir(adapter, allow_pickle=allow_pickle, require_manifest=False, error=ModelError)
    if mode == "adapter":
        return _export_adapter(verified, out, base)
    return _export_merged(verified, out, base_spec(verified, base), allow_pickle, tolerance,
                          prompts or PARITY_PROMPTS)


def _inputs(verified: VerifiedAdapter) -> dict[str, str]:
    files = [verified.path / CONFIG_FILE, verified.weights]
    return {f"adapter/{f.name}": sha256_file(f) for f in files}


def _export_adapter(verified: VerifiedAdapter, out: Path, base: str | None) -> Manifest:
    config = dict(verified.config)
    if base:
        config["base_model_name_or_path"] = base
    problems = vllm_problems(config)
    for p in problems:
        log.warning("%s: %s", verified.path, p)
    source_extra = (verified.manifest or {}).get("extra") or {}
    with atomic_dir(out) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if verified.weights.name == SAFE_WEIGHTS:
            shutil.copyfile(verified.weights, tmp / SAFE_WEIGHTS)
        else:  # pickle allowed by the caller: convert, so the export itself is safe to load anywhere
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in load_weights(verified).items()}, str(tmp / SAFE_WEIGHTS),
                      metadata={"format": "pt"})
        if (verified.path / "README.md").is_file():
            shutil.copyfile(verified.path / "README.md", tmp / "README.md")
        manifest = Manifest(
            stage="export", config_hash=sha256_json({"mode": "adapter", "base": base}), inputs=_inputs(verified),
            config={"mode": "adapter", "base": base}, parents=[str(verified.path.resolve())],
            extra={**source_extra, "mode": "adapter", "vllm_compatible": not problems, "vllm_problems": problems,
                   "source_manifest_sha256": sha256_file(verified.path / MANIFEST) if verified.manifest else None})
        manifest.save(tmp)
    return manifest


def _refuse_pickled_base(path: Path, allow_pickle: bool) -> None:
    if allow_pickle or any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise ModelError(f"{path}: the base model's weights are pickle files (.bin), which can run code when "
                         "loaded; convert them to safetensors, or pass --allow-pickle if you trust them")


def _logits(model: Any, batches: list[Any]) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [model(input_ids=ids).logits.float() for ids in batches]


def _export_merged(verified: VerifiedAdapter, out: Path, spec: str, allow_pickle: bool, tolerance: float,
                   prompts: list[list[dict[str, str]]]) -> Manifest:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorapipe.models import load_model, load_tokenizer, resolve

    info = resolve(spec)
    _refuse_pickled_base(info.path, allow_pickle)
    recorded = (verified.base_identity or {}).get("weights_sha256")
    if recorded and recorded != info.weights_sha256:
        raise ModelError(f"{verified.path}: trained on base weights {recorded[:12]}…, but `{spec}` has "
                         f"{info.weights_sha256[:12]}…; pass the right --base")
    tok = load_tokenizer(info)
    model = load_model(info, dtype=torch.float32).eval()
    try:
        peft_model = PeftModel.from_pretrained(model, str(verified.path)).eval()
    except Exception as e:  # noqa: BLE001 - wrong base for these target modules or shapes
        raise ModelError(f"{verified.path}: cannot apply the adapter to `{spec}`: {e}") from None
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    batches = [torch.tensor([tok(t, add_special_tokens=False)["input_ids"]]) for t in texts]
    unmerged = _logits(peft_model, batches)
    merged = peft_model.merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        diff = max(float((a - b).abs().max()) for a, b in zip(unmerged, _logits(reloaded, batches), strict=True))
        log.info("merge parity: max |logit difference| = %.3g (tolerance %.3g)", diff, tolerance)
        if not diff <= tolerance:  # also catches NaN
            raise ModelError(f"merge parity failed: the merged model's logits differ from the adapter's by up "
                             f"to {diff:.3g} (tolerance {tolerance:.3g}); nothing was written to {out}. Check "
                             "that --base is the model the adapter was trained on, or serve the adapter unmerged")
        config = {"mode": "merge", "base": info.identity(), "tolerance": tolerance}
        manifest = Manifest(
            stage="export", config_hash=sha256_json(config), inputs=_inputs(verified), config=config,
            parents=[str(verified.path.resolve())],
            metrics={"parity_max_abs_diff": diff, "parity_tolerance": tolerance, "parity_inputs": len(batches)},
            extra={"mode": "merge", "base_model": info.identity(), "adapter_config": verified.config})
        manifest.save(tmp)
    return manifest
