"""What a stage's output depends on, and the one key the runner computes from it.

A stage declares :class:`Deps`; the runner hashes them into a flat *fingerprint* and stores it in the
stage's manifest (``config_hash`` for the config sections, ``inputs`` for the rest). The stage is
skipped only when the recorded fingerprint equals the current one and its outputs are intact; the
keys that differ say why it runs (``code:teacher``, ``file:inputs``, ``model:base``...).

* ``sections``: config sections, resolved (an ``openai`` teacher's model, base_url and sampling
  settings live in its section, so they are covered here);
* ``files``: files or directories the stage reads (an absent optional one hashes as ``absent``);
* ``code``: ``module:function`` specs whose module, and everything it imports from the config's
  folder, is part of the result (python teachers, judges, custom checks);
* ``models``: model specs whose *weights* matter (the base model; a ``local`` teacher's model), hashed
  by content, so weights rebuilt at the same path re-run what used them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lorapipe.codehash import code_sha256
from lorapipe.config import LLMConfig, PipelineConfig
from lorapipe.manifest import sha256_file, sha256_json, sha256_tree

ABSENT = "absent"


@dataclass(frozen=True)
class Deps:
    sections: tuple[str, ...] = ()
    files: Mapping[str, Path | None] = field(default_factory=dict)
    code: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)


def llm_deps(cfg: PipelineConfig, role: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(code, models)`` of the teacher or judge: a python function's code, a local model's weights.
    The rest of an LLM's identity (kind, model name, base_url, sampling) is its config section."""
    llm: LLMConfig | None = getattr(cfg, role)
    if llm is None:
        return {}, {}
    if llm.kind == "python" and llm.function:
        return {role: llm.function}, {}
    if llm.kind == "local":
        return {}, {role: llm.model or cfg.base_model}
    return {}, {}


def checks_code(cfg: PipelineConfig) -> dict[str, str]:
    return {f"check{i}": spec for i, spec in enumerate(cfg.score.rules.custom)}


def hash_path(p: Path | None) -> str:
    if p is None or not p.exists():
        return ABSENT
    if p.is_dir():
        return sha256_json(sha256_tree(p))
    return sha256_file(p)


def fingerprint(cfg: PipelineConfig, deps: Deps, model_hash: Callable[[str], str]) -> tuple[str, dict[str, str]]:
    """``(config_hash, inputs)``: the hash of the config sections, and every other dependency's hash."""
    inputs: dict[str, str] = {}
    for name, p in sorted(deps.files.items()):
        inputs[f"file:{name}"] = hash_path(p)
    for name, spec in sorted(deps.code.items()):
        inputs[f"code:{name}"] = code_sha256(spec, cfg.base_dir) or ABSENT
    for name, spec in sorted(deps.models.items()):
        inputs[f"model:{name}"] = model_hash(spec)
    return cfg.section_hash(*deps.sections), inputs


def changed(old_config: str, old_inputs: Mapping[str, str], config_hash: str, inputs: Mapping[str, str]) -> list[str]:
    """What differs between a recorded fingerprint and the current one (``config`` for the sections)."""
    why = ["config"] if old_config != config_hash else []
    why += sorted(k for k in set(old_inputs) | set(inputs) if old_inputs.get(k) != inputs.get(k))
    return why
