"""Adapter directories: the files of a PEFT LoRA adapter, and the one check every load and push runs.

An adapter directory holds ``adapter_config.json``, ``adapter_model.safetensors`` (or a pickle
``adapter_model.bin``) and, when lorapipe wrote it, ``manifest.json`` with the sha256 of every file
and the identity of the base model it was trained on (``extra.base_model``).

:func:`verify_adapter_dir` is the check. Everything that loads or stores an adapter runs it with the
same two switches (``--allow-pickle``, ``--allow-unverified`` on the command line): ``predict``,
``eval`` and the pipeline's evaluate stage (through :func:`lorapipe.models.load_adapter`),
``export``, ``registry push`` and ``registry verify``, and the server (built-in engine, vLLM plan and
proxy). It refuses:

* a directory that is not a PEFT LoRA adapter;
* pickle weights, which can run code when loaded, unless ``allow_pickle``;
* a file whose sha256 differs from the manifest (tampered, bit rot), a file the manifest lists but
  that is missing, or the config/weights not covered by it;
* no manifest at all, unless ``allow_unverified`` (then nothing can be compared);
* safetensors weights whose header does not describe the file (truncated, not safetensors).

:func:`check_base_compatible` then refuses an adapter trained on other base weights, naming the
base it was trained on. This module is low-level: it imports only errors and manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.errors import ModelError
from lorapipe.manifest import MANIFEST, safetensors_problem, sha256_file

CONFIG_FILE = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
# what vLLM's LoRA loader takes as modules_to_save (vllm/lora/models.py and peft_helper.py)
_VLLM_MODULES_TO_SAVE = {"lm_head", "embed_tokens"}


class AdapterInvalid(ModelError):
    """An adapter directory failed :func:`verify_adapter_dir` or :func:`check_base_compatible`."""

    exit_code = 2


@dataclass
class VerifiedAdapter:
    """What :func:`verify_adapter_dir` found: the parsed config, weights file and manifest."""

    path: Path
    config: dict[str, Any]
    weights: Path
    manifest: dict[str, Any] | None

    @property
    def base_identity(self) -> dict[str, Any] | None:
        extra = (self.manifest or {}).get("extra") or {}
        ident = extra.get("base_model")
        return ident if isinstance(ident, dict) else None

    @property
    def trained_on(self) -> str | None:
        """The base model spec it was trained on: the manifest's record, else the PEFT config's."""
        return (self.base_identity or {}).get("spec") or self.config.get("base_model_name_or_path") or None


def adapter_config(path: str | Path, *, error: type[Exception] = AdapterInvalid) -> dict[str, Any]:
    """``adapter_config.json`` of a PEFT directory, parsed; raise ``error`` if it is missing or not JSON."""
    cfg_file = Path(path) / CONFIG_FILE
    if not cfg_file.is_file():
        raise error(f"{path}: not a PEFT adapter directory (no {CONFIG_FILE}); pass the `adapter` folder "
                    "written by `lorapipe train`, e.g. runs/<task>/train/adapter")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        got = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise error(f"{cfg_file}: peft_type is {got!r}; only LoRA adapters (peft_type LORA) are supported")
    return config


def _manifest_problems(path: Path, manifest: Any, covered: tuple[Path, ...]) -> list[str]:
    outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return [f"{MANIFEST} has no `outputs` map of file -> sha256"]
    bad = []
    for rel, digest in sorted(outputs.items()):
        f = path / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            bad.append(f"{rel}: path escapes the adapter directory")
        elif not f.is_file():
            bad.append(f"{rel}: listed in the manifest but missing")
        elif (actual := sha256_file(f)) != digest:
            bad.append(f"{rel}: sha256 mismatch (manifest {str(digest)[:12]}…, file {actual[:12]}…)")
    bad += [f"{f.name}: not covered by the manifest" for f in covered if f.name not in outputs]
    return bad


def verify_adapter_dir(path: str | Path, *, allow_pickle: bool = False, require_manifest: bool = True,
                       error: type[Exception] = AdapterInvalid) -> VerifiedAdapter:
    """Check a PEFT LoRA directory before anything loads or stores it; raise ``error`` naming the problem."""
    path = Path(path)
    config = adapter_config(path, error=error)
    if (path / SAFE_WEIGHTS).is_file():
        weights = path / SAFE_WEIGHTS
    elif (path / PICKLE_WEIGHTS).is_file():
        if not allow_pickle:
            raise error(f"{path / PICKLE_WEIGHTS}: pickle weights can run code when loaded; refusing. Convert "
                        "the adapter to safetensors, or pass --allow-pickle if you trust its origin")
        weights = path / PICKLE_WEIGHTS
    else:
        raise error(f"{path}: no adapter weights ({SAFE_WEIGHTS})")
    manifest = None
    if (path / MANIFEST).is_file():
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise error(f"{path / MANIFEST}: not valid JSON ({e}); re-export the adapter") from None
        if bad := _manifest_problems(path, manifest, (path / CONFIG_FILE, weights)):
            raise error(f"{path}: adapter files do not match {MANIFEST} (corrupt or tampered); refusing it: "
                        + "; ".join(bad))
    elif require_manifest:
        raise error(f"{path}: no {MANIFEST}, so its files cannot be verified; write one with "
                    "lorapipe.manifest.Manifest(...).save(dir), or pass --allow-unverified if you trust it")
    if weights.suffix == ".safetensors" and (why := safetensors_problem(weights)):
        raise error(f"{weights}: corrupt adapter weights ({why}); re-export or re-train the adapter")
    return VerifiedAdapter(path, config, weights, manifest)


def check_base_compatible(adapter: VerifiedAdapter, base_identity: dict[str, Any], *,
                          error: type[Exception] = AdapterInvalid) -> None:
    """Refuse an adapter whose manifest says it was trained on other base weights than ``base_identity``."""
    want = (adapter.base_identity or {}).get("weights_sha256")
    have = base_identity.get("weights_sha256")
    if want and have and want != have:
        raise error(f"{adapter.path}: trained on base `{adapter.trained_on}` (weights {want[:12]}…), but the base "
                    f"model here is `{base_identity.get('spec')}` (weights {have[:12]}…); use the adapter "
                    f"with `{adapter.trained_on}` (base_model / --base)")


def load_weights(adapter: VerifiedAdapter, *, error: type[Exception] = AdapterInvalid) -> dict[str, Any]:
    """Read the adapter's tensors (safetensors, or pickle with ``weights_only`` when allowed)."""
    try:
        if adapter.weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(adapter.weights), device="cpu")
        import torch

        return torch.load(adapter.weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, bad header...
        raise error(f"{adapter.weights}: cannot read the weights ({type(e).__name__}: {e})") from None


def base_spec(adapter: VerifiedAdapter, override: str | None = None) -> str:
    """Which base model the adapter belongs to: ``override``, the manifest's record, or its config."""
    if override:
        return override
    if not (spec := adapter.trained_on):
        raise ModelError(f"{adapter.path}: neither {MANIFEST} (extra.base_model.spec) nor {CONFIG_FILE} "
                         "(base_model_name_or_path) names the base model; pass --base SPEC")
    return str(spec)


def lora_rank(config: dict[str, Any]) -> int:
    """The largest rank an adapter config uses (``r`` and any per-module ``rank_pattern``)."""
    ranks = [int(config.get("r") or 8), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


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


__all__ = [
    "CONFIG_FILE",
    "PICKLE_WEIGHTS",
    "SAFE_WEIGHTS",
    "AdapterInvalid",
    "VerifiedAdapter",
    "adapter_config",
    "base_spec",
    "check_base_compatible",
    "load_weights",
    "lora_rank",
    "verify_adapter_dir",
    "vllm_problems",
]
