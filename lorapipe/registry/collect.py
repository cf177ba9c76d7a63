"""Turn a run directory (or a bare adapter directory) into the files and facts of a version record.

Files are stored under a *role* prefix, which is also the layout ``pull`` materialises::

    run dir                        stored as
    train/adapter/*           ->   adapter/*           (PEFT dir + its manifest.json)
    train/* (other files)     ->   train/*
    split/*                   ->   data/*              (train.jsonl, eval.jsonl, manifest.json)
    generate|score|augment/*  ->   data/<stage>/*
    evaluate/*                ->   report/*            (report.html, ab.json, ...)
    config.json, run.json     ->   config/config.json, config/run.json   (also pipeline.yaml, run/*)
    data.inputs & co.         ->   inputs/<file name>  (when the raw files can still be found)
    cache/ (teacher answers)  ->   cache/*             (a consistent SQLite snapshot: rebuilds replay it)
    module:function files     ->   code/<module>.py    (teacher, judge, custom checks next to the config;
                                                        also generate.template)
    any other folder/file     ->   extra/...           (files under 1 MiB only)

A directory made by ``Registry.pull`` (roles already applied, plus ``version.json``) can be pushed
again as is, e.g. to copy a version from a local registry to S3.

Never stored (recorded under ``skipped``): ``checkpoint-*`` folders,
TensorBoard event files (their folders are linked under ``logs``), hidden and ``*.tmp`` files.
Only ``train/adapter`` is required in a run directory; everything else is taken when present.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.adapter_files import CONFIG_FILE
from lorapipe.errors import RegistryError
from lorapipe.manifest import MANIFEST, sha256_file

DATA_STAGES = ("generate", "score", "augment")
STAGE_ROLES = {"split": "data", "evaluate": "report", "run": "config"}
SKIP_DIRS = {"cache", "checkpoints", "__pycache__", ".git"}  # "cache" of a run: taken apart (_take_cache)
EXTRA_MAX_BYTES = 1 << 20
PULLED_RECORD = "version.json"  # what Registry.pull writes next to the files
TOP_CONFIG_FILES = ("pipeline.yaml", "config.json", "run.json")  # the resolved config, the run summary
_PROMPT_KEYS = ("prompt", "prompts", "template", "system_prompt", "judge_prompt", "teacher_prompt", "criteria")


@dataclass
class Collected:
    """What a push stores: ``files`` maps ``role/path`` to the local file; the rest feeds the record."""

    kind: str  # "run", "pulled" or "adapter"
    root: Path
    adapter_dir: Path  # the PEFT directory inside root (root itself for a bare adapter)
    files: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> manifest.json
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensorboard: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_adapter_dir(p: Path) -> bool:
    return (p / CONFIG_FILE).is_file()


def collect(path: str | Path) -> Collected:
    """Gather a run directory (``runs/<task>/``) or a bare PEFT adapter directory."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise RegistryError(f"{path}: no such directory; pass a run directory (runs/<task>) or an "
                            "adapter directory (holding adapter_config.json)")
    if is_adapter_dir(root / "train" / "adapter"):
        col = Collected("run", root, root / "train" / "adapter")
        _walk_run(col)
    elif is_adapter_dir(root / "adapter") and (root / PULLED_RECORD).is_file():
        col = Collected("pulled", root, root / "adapter")
        _walk_pulled(col)
    elif is_adapter_dir(root):
        col = Collected("adapter", root, root)
        _walk(col, root, lambda rel: f"adapter/{rel}", limit=None)
        if (m := _load_json(root / MANIFEST)) is not None:
            col.manifests["train"] = m
            col.config = m.get("config") or {}
    else:
        raise RegistryError(f"{path}: neither a run directory (no train/adapter/{CONFIG_FILE}) nor an "
                            f"adapter directory (no {CONFIG_FILE}); train first (`lorapipe run`) or "
                            "pass the folder that holds the adapter")
    return col


def _walk(col: Collected, base: Path, role_of, limit: int | None, skip_dirs: set[str] = SKIP_DIRS) -> None:
    """Add every file below ``base`` under ``role_of(relative path)``, skipping what is never stored."""
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base).as_posix()
        parts = p.relative_to(base).parts
        if any(x.startswith((".", "checkpoint-")) or x in skip_dirs for x in parts[:-1]):
            continue
        if p.is_dir():
            if p.name.startswith("checkpoint-") or p.name in skip_dirs:
                col.skipped.append(str(p.relative_to(col.root)))
            if any(c.name.startswith("events.out.tfevents") for c in p.iterdir() if c.is_file()):
                col.tensorboard.append(str(p))
            continue
        name = p.name
        if name.startswith((".", "events.out.tfevents")) or name.endswith((".tmp", "-wal", "-shm", "-journal")):
            continue
        if limit is not None and p.stat().st_size > limit:
            col.skipped.append(str(p.relative_to(col.root)))
            continue
        col.files[role_of(rel)] = p


def stage_folder(stage: str) -> str | None:
    """Where a run's stage folder (and its manifest.json) is stored, or None for a folder stored as extra."""
    if stage == "train":
        return "train"
    if stage in DATA_STAGES:
        return f"data/{stage}"
    return STAGE_ROLES.get(stage)


def _walk_run(col: Collected) -> None:
    root = col.root
    for top in sorted(root.iterdir()):
        name = top.name
        if name.startswith(".") or name.endswith(".tmp"):
            continue
        if name == "cache" and top.is_dir():
            _take_cache(col, top)
            continue
        if name in SKIP_DIRS:
            col.skipped.append(name)
            continue
        if top.is_file():
            role = f"config/{name}" if name in TOP_CONFIG_FILES else f"extra/{name}"
            if role.startswith("extra/") and top.stat().st_size > EXTRA_MAX_BYTES:
                col.skipped.append(name)
            else:
                col.files[role] = top
            continue
        if name == "train":
            _walk(col, top, lambda rel: f"adapter/{rel[len('adapter/'):]}" if rel.startswith("adapter/")
                  else f"train/{rel}", limit=None)
        elif (folder := stage_folder(name)) is not None:
            _walk(col, top, lambda rel, f=folder: f"{f}/{rel}", limit=None)
        else:
            _walk(col, top, lambda rel, n=name: f"extra/{n}/{rel}", limit=EXTRA_MAX_BYTES)
        for mpath in (top / MANIFEST, top / "adapter" / MANIFEST):
            if (m := _load_json(mpath)) is not None:
                # train/manifest.json and train/adapter/manifest.json both describe training
                col.manifests[name] = {**col.manifests.get(name, {}), **m,
                                       "metrics": {**col.manifests.get(name, {}).get("metrics", {}),
                                                   **(m.get("metrics") or {})}}
    col.config = (_load_json(root / "config.json") or _load_json(root / "run" / "config.json")
                  or _load_yaml(root / "pipeline.yaml")
                  or (col.manifests.get("train") or {}).get("config") or {})
    _find_inputs(col)
    _find_code(col)


def _take_cache(col: Collected, cache: Path) -> None:
    """Store the run's answer caches as consistent snapshots (SQLite's backup API: WAL folded in)."""
    dbs = sorted(p for p in cache.rglob("*") if p.is_file() and p.suffix in (".sqlite", ".db"))
    if not dbs:
        return
    tmp = Path(tempfile.mkdtemp(prefix="lorapipe-cache-snapshot-"))
    weakref.finalize(col, shutil.rmtree, tmp, True)  # the snapshot lives as long as the push needs it
    for db in dbs:
        rel = db.relative_to(cache).as_posix()
        snap = tmp / rel
        snap.parent.mkdir(parents=True, exist_ok=True)
        try:
            src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(snap)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.DatabaseError as e:
            col.skipped.append(f"cache/{rel} (unreadable: {e})")
            continue
        col.files[f"cache/{rel}"] = snap


def _function_specs(cfg: dict[str, Any]) -> list[str]:
    specs = [c.get("function") for c in (cfg.get("teacher"), cfg.get("judge")) if isinstance(c, dict)]
    rules = (cfg.get("score") or {}).get("rules") if isinstance(cfg.get("score"), dict) else None
    if isinstance(rules, dict):
        specs += [x for x in rules.get("custom") or [] if isinstance(x, str)]
    return [x for x in specs if isinstance(x, str) and x.count(":") == 1]


def _find_code(col: Collected) -> None:
    """Store the user modules the config names (``module:function``) when they sit next to the config,
    and ``generate.template``: a rebuild needs them, an installed package is recorded by version only."""
    wanted = [Path(*spec.split(":")[0].split(".")).with_suffix(".py").as_posix()
              for spec in _function_specs(col.config)]
    gen = col.config.get("generate")
    template = (gen or {}).get("template") if isinstance(gen, dict) else None
    if isinstance(template, str):
        wanted.append(template)
    for rel in dict.fromkeys(wanted):
        if (found := _locate(col, rel)) is not None:
            col.files[f"code/{found.name if Path(rel).expanduser().is_absolute() else rel}"] = found


def _walk_pulled(col: Collected) -> None:
    """A directory made by ``Registry.pull``: files are already under their roles (push it elsewhere)."""
    _walk(col, col.root, lambda rel: rel, limit=None, skip_dirs=SKIP_DIRS - {"cache"})  # cache/: a snapshot
    col.files.pop(PULLED_RECORD, None)
    rec = _load_json(col.root / PULLED_RECORD) or {}
    for rp in col.files:
        if rp.endswith("/" + MANIFEST) and (m := _load_json(col.files[rp])) is not None:
            role_dir = rp[: -len(MANIFEST) - 1]
            stage = {"adapter": "train", "data": "split", "report": "evaluate"}.get(role_dir, role_dir)
            col.manifests[stage.rsplit("/", 1)[-1]] = m
    col.config = rec.get("config") or {}
    col.inputs = (rec.get("inputs") or {}).get("files") or {}
    col.tensorboard = list((rec.get("logs") or {}).get("tensorboard") or [])


def _find_inputs(col: Collected) -> None:
    """Store the raw input files the config names, when they can still be found next to the run."""
    data = col.config.get("data") if isinstance(col.config.get("data"), dict) else {}
    for fld in ("inputs", "train_file", "eval_file"):
        value = data.get(fld)
        if not value:
            continue
        entry: dict[str, Any] = {"path": str(value), "sha256": None, "stored": None}
        found = _locate(col, value)
        if found is not None:
            role = f"inputs/{found.name}"
            if role in col.files and col.files[role] != found:
                role = f"inputs/{fld}/{found.name}"
            col.files[role] = found
            entry.update(sha256=sha256_file(found), stored=role, found_at=str(found))
        col.inputs[fld] = entry


def _locate(col: Collected, value: str) -> Path | None:
    """A file the config names, where it can still be found: paths in the config are relative to the
    directory of pipeline.yaml, and the default run layout is ``<that dir>/runs/<task>``."""
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [b / p for b in (col.root.parent.parent, col.root, Path.cwd())]
    return next((c for c in candidates if c.is_file()), None)


def _load_json(p: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _load_yaml(p: Path) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def count_rows(p: Path) -> int:
    with open(p, "rb") as f:
        return sum(1 for line in f if line.strip())


def describe(col: Collected, hashes: dict[str, str]) -> dict[str, Any]:
    """The facts of a version record that come from the source directory (no name/version yet)."""
    cfg = col.config
    train_m = col.manifests.get("train") or {}
    adapter_cfg = _load_json(col.files["adapter/" + CONFIG_FILE]) or {}
    base = (train_m.get("extra") or {}).get("base_model") or {
        "spec": adapter_cfg.get("base_model_name_or_path"), "kind": None, "weights_sha256": None}
    # rows and hashes of every JSONL the run made (data/...) or was given (inputs/: ready train/eval rows)
    data = {rp.removeprefix("data/"): {"sha256": hashes[rp], "rows": count_rows(col.files[rp])}
            for rp in sorted(col.files) if rp.startswith(("data/", "inputs/")) and rp.endswith(".jsonl")}
    task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    prompts: dict[str, Any] = {k: task[k] for k in ("description", "system_prompt", "format_spec",
                                                    "quality_criteria", "negative_criteria") if task.get(k)}
    usage: dict[str, Any] = {}
    for stage, m in col.manifests.items():
        extra, metrics = m.get("extra") or {}, m.get("metrics") or {}
        stage_prompts = {k: extra[k] for k in _PROMPT_KEYS if k in extra}
        if stage_prompts:
            prompts[stage] = stage_prompts
        # stages record e.g. {"teacher_usage": {...}, "judge_usage": {...}} or a plain "usage"
        stage_usage = {k: v for src in (metrics, extra) for k, v in src.items()
                       if (k == "usage" or k.endswith("_usage")) and v}
        if stage_usage:
            usage[stage] = stage_usage
    llms = {}
    for role in ("teacher", "judge"):
        ident = next(((m.get("extra") or {}).get(role) for m in col.manifests.values()
                      if isinstance((m.get("extra") or {}).get(role), dict)), None)
        c = cfg.get(role) if isinstance(cfg.get(role), dict) else None
        if ident is None and c:
            ident = {k: c.get(k) for k in ("kind", "model", "base_url", "function")}
        if c and c.get("few_shot"):
            prompts.setdefault(f"{role}_few_shot", c["few_shot"])
        llms[role] = ident
    versions = train_m.get("versions") or {}
    return {
        "source": {"kind": col.kind, "path": str(col.root), "host": socket.gethostname()},
        "base_model": base,
        "adapter": {k: adapter_cfg.get(k) for k in ("peft_type", "r", "lora_alpha", "target_modules",
                                                    "task_type") if k in adapter_cfg},
        "inputs": {"files": col.inputs,
                   "hashes": {s: m.get("inputs") or {} for s, m in col.manifests.items() if m.get("inputs")}},
        "data": data,
        "config": cfg,
        "teacher": llms["teacher"],
        "judge": llms["judge"],
        "prompts": prompts,
        "usage": usage,
        "metrics": {s: m.get("metrics") or {} for s, m in col.manifests.items() if m.get("metrics")},
        "report": next((r for r in ("report/report.html", "report/ab.json") if r in col.files), None),
        "stages": {s: {k: m.get(k) for k in ("stage", "config_hash", "created", "git_revision", "parents")}
                   for s, m in sorted(col.manifests.items())},
        "code": {"lorapipe": versions.get("lorapipe"), "git_revision": train_m.get("git_revision"),
                 "versions": versions},
        "logs": {"run_dir": str(col.root), "tensorboard": sorted(set(col.tensorboard)),
                 "files": sorted(str(p) for p in col.files.values() if p.suffix == ".log")},
        "skipped": sorted(set(col.skipped))[:100],
    }
