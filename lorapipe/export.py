"""Export a trained adapter: merged into its base model (parity-checked), or as a plain PEFT adapter.

``merge``: the base is loaded in fp32, the adapter applied with ``PeftModel.from_pretrained`` and
folded in with ``merge_and_unload``; the result is saved as a standard safetensors model plus the
tokenizer, loaded back from disk, and its logits compared with the unmerged model's on a few chat
prompts. The largest absolute difference is recorded (``metrics.parity_max_abs_diff``) and must stay
under ``tolerance`` (1e-4 for fp32), else nothing is written.

``adapter``: the adapter's config and weights (always as safetensors) with a fresh manifest,
loadable by ``peft.PeftModel.from_pretrained`` and by ``vllm serve BASE --enable-lora
--lora-modules NAME=DIR``; features vLLM cannot serve are listed in ``extra.vllm_problems``.

``gguf``: the adapter as a llama.cpp LoRA-adapter GGUF (``adapter.gguf``, see
:mod:`lorapipe.llamacpp`) beside an Ollama ``Modelfile`` (``FROM`` the base's GGUF, ``ADAPTER``
the file, the chat template, the task's system prompt). What llama.cpp cannot load (DoRA,
``modules_to_save``, trained biases...) is refused before anything is written.

The adapter passes :func:`lorapipe.adapter_files.verify_adapter_dir` first (pickle ``.bin`` weights
only with ``allow_pickle``, no manifest only with ``allow_unverified``). The base model comes from
the adapter manifest's ``extra.base_model.spec``, else ``adapter_config.json``'s
``base_model_name_or_path``, unless ``base`` overrides it. The output directory is written
atomically and never replaces a folder export did not write (:func:`check_target`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from lorapipe.adapter_files import (
    CONFIG_FILE,
    SAFE_WEIGHTS,
    VerifiedAdapter,
    base_spec,
    check_base_compatible,
    load_weights,
    verify_adapter_dir,
    vllm_problems,
)
from lorapipe.errors import ConfigError, ModelError
from lorapipe.llamacpp import ADAPTER_FILE, MODELFILE
from lorapipe.manifest import MANIFEST, Manifest, atomic_dir, sha256_file, sha256_json

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
PARITY_PROMPTS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [{"role": "system", "content": "Answer in JSON."},
     {"role": "user", "content": "Extract the contact: Ann Lee, ann.lee@example.com, +1 555 123 4567"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]


def check_target(out: Path, source: Path, mode: str, *, force: bool = False) -> None:
    """Refuse an ``--out`` whose replacement would destroy what export did not write.

    ``out`` is replaced whole, so it must be new, empty, or an earlier export of the same ``mode``
    holding nothing but the files its manifest lists; ``force`` allows any other folder. Never,
    even with ``force``: the adapter directory, a folder that holds it (a run directory) or one
    inside it, and the current directory or a folder that holds it.
    """
    target, src, here = out.resolve(), source.resolve(), Path.cwd().resolve()
    clash = ("is the adapter directory" if target == src else "holds the adapter directory" if target in src.parents
             else "lies inside the adapter directory" if src in target.parents else None)
    if clash:
        raise ConfigError(f"--out {out}: {clash} {source}, and export replaces the whole folder; choose a new "
                          "directory outside it (e.g. exports/NAME)")
    if target == here or target in here.parents:
        raise ConfigError(f"--out {out}: is the current directory or holds it, and export replaces the whole "
                          "folder; choose a new directory (e.g. exports/NAME)")
    if not (target.exists() or target.is_symlink()) or (target.is_dir() and not any(target.iterdir())):
        return
    if force or _earlier_export(target, mode):
        return
    found = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    what = "a file" if target.is_file() else f"a folder of {len(found)} file(s) ({shown or 'only folders'})"
    raise ConfigError(f"--out {out}: already exists and is {what}, not an earlier {mode} export; export would "
                      "replace all of it. Choose a new or empty directory, or pass --force to replace it")


def _earlier_export(target: Path, mode: str) -> bool:
    """An export of ``mode`` written here, holding nothing its manifest does not list (no notes added)."""
    m = Manifest.load(target) if target.is_dir() else None
    if m is None or m.stage != "export" or m.config.get("mode") != mode:
        return False
    files = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file() or p.is_symlink()}
    return files <= set(m.outputs) | {MANIFEST}


def run(adapter: str | Path, out: str | Path, *, mode: Literal["merge", "adapter", "gguf"] = "merge",
        base: str | None = None, allow_pickle: bool = False, allow_unverified: bool = False, force: bool = False,
        tolerance: float = FP32_TOLERANCE, prompts: list[list[dict[str, str]]] | None = None,
        gguf_dtype: str = "f32", gguf_base: str = "auto") -> Manifest:
    """Export ``adapter`` to ``out`` (see the module docstring); return the written manifest."""
    if mode not in ("merge", "adapter", "gguf"):
        raise ModelError(f"export mode must be `merge`, `adapter` or `gguf`, got {mode!r}")
    adapter, out = Path(adapter), Path(out)
    check_target(out, adapter, mode, force=force)
    verified = verify_adapter_dir(adapter, allow_pickle=allow_pickle, require_manifest=not allow_unverified)
    if mode == "adapter":
        return _export_adapter(verified, out, base)
    if mode == "gguf":
        return _export_gguf(verified, out, base_spec(verified, base), gguf_dtype, gguf_base)
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


def _export_gguf(verified: VerifiedAdapter, out: Path, spec: str, dtype: str, base_dtype: str = "auto") -> Manifest:
    from lorapipe import llamacpp
    from lorapipe.models import gguf_file, load_tokenizer, resolve

    if base_dtype not in llamacpp.BASE_DTYPES:
        raise ModelError(f"the GGUF base must be one of {', '.join(llamacpp.BASE_DTYPES)}, got {base_dtype!r}")
    info = resolve(spec)
    check_base_compatible(verified, info.identity())
    base_config = llamacpp.read_base_config(info.path)
    base_gguf = gguf_file(spec)
    if base_dtype == "auto":  # the weights lorapipe trained on: a quantised GGUF is written out in f16
        base_dtype = "f16" if base_gguf is not None and llamacpp.quantized(base_gguf) else "as-is"
    source_manifest = verified.manifest or {}
    system = ((source_manifest.get("config") or {}).get("task") or {}).get("system_prompt")
    note = None
    if base_gguf is None:  # a Hugging Face base: Ollama converts a safetensors directory itself
        note = (f"the base `{spec}` is not a GGUF file; Ollama imports the directory below, or convert it with "
                "llama.cpp's convert_hf_to_gguf.py and put that file in FROM")
        if base_dtype != "as-is":
            raise ModelError(f"--gguf-base {base_dtype}: the base `{spec}` is not a GGUF file to convert; "
                             "convert it with llama.cpp's convert_hf_to_gguf.py --outtype " + base_dtype)
    with atomic_dir(out) as tmp:
        from_base = str(base_gguf or info.path)
        if base_dtype != "as-is" and base_gguf is not None:  # the weights lorapipe trained on, unquantised
            name = f"base-{base_dtype}.gguf"
            llamacpp.write_dequantized_base(base_gguf, tmp / name, base_dtype)
            from_base, base_gguf = f"./{name}", out.resolve() / name
        written = llamacpp.write_adapter(verified, base_config, tmp / ADAPTER_FILE, dtype=dtype,
                                         name=verified.path.resolve().name)
        text = llamacpp.modelfile(from_base, f"./{ADAPTER_FILE}",
                                  chat_template=load_tokenizer(info).chat_template, system=system, note=note)
        (tmp / MODELFILE).write_text(text, encoding="utf-8")
        config = {"mode": "gguf", "base": info.identity(), "dtype": dtype, "base_dtype": base_dtype}
        manifest = Manifest(
            stage="export", config_hash=sha256_json(config), inputs=_inputs(verified), config=config,
            parents=[str(verified.path.resolve())],
            metrics={"gguf_pairs": written.pairs, "gguf_alpha": written.alpha, "gguf_rank": written.rank,
                     "gguf_folded_scales": written.folded},
            extra={"mode": "gguf", "base_model": info.identity(), "base_gguf": str(base_gguf) if base_gguf else None,
                   "architecture": written.architecture, "system_prompt": system,
                   "adapter_config": verified.config})
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
    check_base_compatible(verified, info.identity())
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
