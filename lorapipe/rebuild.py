"""Rebuild a registered version from what it recorded, and say whether the result is the same.

``rebuild(registry, "contacts@v3")``:

1. pulls the version into ``OUT/recorded/`` (hash-checked): its resolved config, raw inputs, the
   modules its config names (``code/``), the teacher/judge answer cache (``cache/``), data, adapter;
2. writes ``OUT/pipeline.yaml`` — the recorded config with the inputs pointing at the pulled copies
   and the run going to ``OUT/run`` — puts the modules next to it and the answer cache into the run,
   so the teacher is never asked again (new calls are counted and reported);
3. runs the pipeline (every stage; ``evaluate=False`` stops after training);
4. compares: every data file each stage wrote (sha256, must be identical), the adapter's tensors
   (max absolute difference, within ``atol``), and the recorded metrics (within ``rtol``; timings
   are not compared).

The verdict and every difference go to ``OUT/rebuild.json``. Bit-identical weights are not promised:
the order of floating-point sums depends on thread count and CPU, hence the tolerance.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.errors import RegistryError
from lorapipe.manifest import MANIFEST, atomic_write_json, sha256_file
from lorapipe.registry.collect import _load_json, stage_folder

_TIMING = ("runtime", "seconds", "_s", "per_second", "latency", "s_per")


@dataclass
class RebuildReport:
    ref: str
    out_dir: str
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # "stage/file" -> recorded, rebuilt, same
    weights: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # "stage.metric" -> recorded, rebuilt, ok
    new_calls: dict[str, int] = field(default_factory=dict)  # stage -> teacher/judge calls not from the cache
    base_model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def data_identical(self) -> bool:
        return bool(self.data) and all(d["same"] for d in self.data.values())

    @property
    def weights_ok(self) -> bool:
        return bool(self.weights.get("ok"))

    @property
    def metrics_ok(self) -> bool:
        return all(m["ok"] for m in self.metrics.values())

    @property
    def ok(self) -> bool:
        return self.data_identical and self.weights_ok and self.metrics_ok and self.base_model.get("same", True)

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "out_dir": self.out_dir, "ok": self.ok, "data_identical": self.data_identical,
                "weights_ok": self.weights_ok, "metrics_ok": self.metrics_ok, "data": self.data,
                "weights": self.weights, "metrics": self.metrics, "new_calls": self.new_calls,
                "base_model": self.base_model, "seconds": self.seconds}

    def differences(self) -> list[str]:
        out = [f"data {k}: {d['recorded'][:12] if d['recorded'] else None} -> "
               f"{d['rebuilt'][:12] if d['rebuilt'] else 'missing'}" for k, d in self.data.items() if not d["same"]]
        if not self.weights_ok:
            out.append(f"weights: {self.weights.get('problem') or ''} max |diff| "
                       f"{self.weights.get('max_abs_diff')} > {self.weights.get('atol')} "
                       f"(worst: {self.weights.get('worst_tensor')})")
        out += [f"metric {k}: {m['recorded']} -> {m['rebuilt']}" for k, m in self.metrics.items() if not m["ok"]]
        if not self.base_model.get("same", True):
            out.append(f"base model weights: {self.base_model.get('recorded')} -> {self.base_model.get('rebuilt')}")
        return out


def prepare(registry: Any, ref: str, out_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Pull ``ref`` and lay out ``out_dir`` for a rerun; return (pipeline.yaml path, version record)."""
    import yaml

    r = registry.resolve(ref)
    record = registry.record(r)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(p.name != "recorded" for p in out.iterdir()):
        raise RegistryError(f"{out}: already exists; rebuild into a new directory (--out DIR) or delete it")
    recorded = registry.pull(r, out / "recorded", overwrite=True)
    cfg_file = recorded / "config" / "config.json"
    if not cfg_file.is_file():
        raise RegistryError(f"{r}: has no recorded config (config/config.json); only versions pushed from a "
                            "run directory (`lorapipe run --push` or `registry push runs/<task>`) can be rebuilt")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    data = cfg.setdefault("data", {})
    stored_inputs = ((record.get("inputs") or {}).get("files")) or {}
    for fld in ("inputs", "train_file", "eval_file"):
        if not data.get(fld):
            continue
        stored = (stored_inputs.get(fld) or {}).get("stored")
        if not stored or not (recorded / stored).is_file():
            raise RegistryError(f"{r}: data.{fld} ({data[fld]}) was not stored with the version (it was not "
                                "found when pushed), so it cannot be rebuilt; push again from the run directory")
        data[fld] = str(recorded / stored)
    gen = cfg.get("generate") or {}
    if gen.get("template"):
        tpl = recorded / "code" / gen["template"]
        if not tpl.is_file():
            tpl = recorded / "code" / Path(gen["template"]).name
        if not tpl.is_file():
            raise RegistryError(f"{r}: generate.template ({gen['template']}) was not stored with the version")
        gen["template"] = str(tpl)
    for p in sorted((recorded / "code").rglob("*.py")) if (recorded / "code").is_dir() else []:
        target = out / p.relative_to(recorded / "code")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    run_dir = out / "run"
    cfg["output_dir"] = str(run_dir)
    if (recorded / "cache").is_dir():
        shutil.copytree(recorded / "cache", run_dir / "cache", dirs_exist_ok=True)
    pipeline_yaml = out / "pipeline.yaml"
    pipeline_yaml.write_text(f"# rebuilt from {r} ({registry.url}); `lorapipe rebuild` wrote this file\n"
                             + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return pipeline_yaml, record


def rebuild(registry: Any, ref: str, out_dir: str | Path | None = None, *, atol: float = 1e-4,
            rtol: float = 0.02, evaluate: bool = True, events: Any = None) -> RebuildReport:
    """Re-run the pipeline ``ref`` recorded into ``out_dir`` and compare (see the module docstring)."""
    import time

    from lorapipe.config import load_config
    from lorapipe.pipeline import STAGES, Pipeline

    r = registry.resolve(ref)
    out = Path(out_dir or Path("rebuilds") / f"{r.name}-v{r.version}").expanduser().resolve()
    t0 = time.perf_counter()
    pipeline_yaml, record = prepare(registry, str(r), out)
    recorded = out / "recorded"
    cfg = load_config(pipeline_yaml)
    only = set(STAGES) if evaluate else set(STAGES) - {"evaluate"}
    pipe = Pipeline(cfg, events=events)
    pipe.message(None, f"rebuilding {r} into {out}")
    result = pipe.run(only=only)
    report = RebuildReport(str(r), str(out))
    for stage, manifest in result.manifests.items():
        folder = stage_folder(stage)  # where the pulled version keeps this stage's manifest
        old = _load_json(recorded / folder / MANIFEST) if folder is not None else None
        if old is None:
            continue
        if folder.startswith("data"):  # generate, score, augment (data/<stage>) and split (data/)
            for name, sha in sorted((old.get("outputs") or {}).items()):
                new = (manifest.outputs or {}).get(name)
                report.data[f"{stage}/{name}"] = {"recorded": sha, "rebuilt": new, "same": sha == new}
        report.metrics.update(_compare_metrics(stage, old.get("metrics") or {}, manifest.metrics or {}, rtol))
        calls = sum(int((u or {}).get("calls") or 0) for k, u in (manifest.extra or {}).items()
                    if k.endswith("_usage") and isinstance(u, dict))
        if calls:
            report.new_calls[stage] = calls
    report.weights = compare_weights(recorded / "adapter", result.run_dir / "train" / "adapter", atol)
    train_new = result.manifests.get("train")
    old_base = (record.get("base_model") or {}).get("weights_sha256")
    new_base = (((train_new.extra or {}).get("base_model") or {}).get("weights_sha256")) if train_new else None
    report.base_model = {"recorded": old_base, "rebuilt": new_base,
                         "same": old_base is None or new_base is None or old_base == new_base}
    report.seconds = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "rebuild.json", report.as_dict())
    return report


def compare_weights(a: Path, b: Path, atol: float) -> dict[str, Any]:
    """Max absolute difference between two adapters' tensors (same names and shapes required)."""
    from safetensors.torch import load_file

    fa, fb = a / "adapter_model.safetensors", b / "adapter_model.safetensors"
    if not fa.is_file() or not fb.is_file():
        return {"ok": False, "atol": atol, "problem": f"missing {fa if not fa.is_file() else fb}"}
    ta, tb = load_file(str(fa)), load_file(str(fb))
    if set(ta) != set(tb):
        return {"ok": False, "atol": atol, "problem": f"tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}"}
    worst, worst_name, identical = 0.0, None, True
    for name in sorted(ta):
        x, y = ta[name].float(), tb[name].float()
        if x.shape != y.shape:
            return {"ok": False, "atol": atol, "problem": f"{name}: shape {tuple(x.shape)} vs {tuple(y.shape)}"}
        d = (x - y).abs().max().item() if x.numel() else 0.0
        identical = identical and d == 0.0
        if d > worst or worst_name is None:
            worst, worst_name = d, name
    return {"ok": worst <= atol, "atol": atol, "max_abs_diff": worst, "worst_tensor": worst_name,
            "identical": identical, "tensors": len(ta), "sha256_recorded": sha256_file(fa),
            "sha256_rebuilt": sha256_file(fb)}


def _compare_metrics(stage: str, old: dict[str, Any], new: dict[str, Any], rtol: float) -> dict[str, dict[str, Any]]:
    out = {}
    for k, v in sorted(old.items()):
        if any(t in k for t in _TIMING) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        w = new.get(k)
        ok = isinstance(w, (int, float)) and (math.isclose(v, w, rel_tol=rtol, abs_tol=1e-9)
                                              or (math.isnan(v) and math.isnan(w)))
        out[f"{stage}.{k}"] = {"recorded": v, "rebuilt": w, "ok": bool(ok)}
    return out

