"""The world the browser UI tests drive: a real pipeline run on a tiny model, a registry holding two
versions, and a live `lorapipe serve` app (keys, runs, registry, watch) on a loopback port."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from test_pipeline_tiny import write_tiny_project

from lorapipe.testing import build_tiny_adapter

ADMIN_KEY = "sk-admin-ui-test-0123"
TENANT_KEY = "sk-alice-ui-test-0123"
ADAPTER = "tiny-contacts"


def run_tiny_pipeline(root: Path, model: Path) -> Path:
    """`lorapipe run` (the real runner, in-process) on a tiny model and a python teacher; the run folder."""
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_project(root, model, teacher="teacher_ui", name=ADAPTER, probe_inputs=2, max_steps=4,
                       eval_steps=2, eval_inputs=3)
    from lorapipe.config import load_config
    from lorapipe.pipeline.runner import Pipeline

    sys.path.insert(0, str(root))  # the python teacher `teacher_ui:answer`
    cwd = os.getcwd()
    try:
        os.chdir(root)
        Pipeline(load_config(root / "pipeline.yaml")).run()
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    return root / "runs" / ADAPTER


@dataclass
class UIWorld:
    root: Path
    base: Path
    runs: Path
    run: Path
    registry: Path


def build_ui_world(root: Path, base: Path) -> UIWorld:
    """The run folder, a second (live) run folder, and a registry: v1 from the run (prod), v2 a new adapter."""
    from lorapipe.registry import Registry

    run = run_tiny_pipeline(root / "project", base)
    reg = Registry(root / "registry")
    reg.push(ADAPTER, run, message="first run")
    other = build_tiny_adapter(base, root / "adapter-v2", seed=7)
    reg.push(ADAPTER, other, message="new seed", parent=f"{ADAPTER}@v1")
    reg.promote(f"{ADAPTER}@v1", "prod")
    return UIWorld(root, base, run.parent, run, root / "registry")


def make_app(world: UIWorld, cache: Path, **settings):
    """The app `lorapipe serve --registry REG --runs DIR --data-dir D --keys ...` builds (the same factory and
    sources as lorapipe.serve.server.run: fine-tuned models first, then the registry)."""
    from lorapipe.serve.adapters import ChainedAdapterSource
    from lorapipe.serve.app import ServeSettings, create_app
    from lorapipe.serve.auth import KeyStore
    from lorapipe.serve.engine import Engine
    from lorapipe.serve.ft_worker import FineTuning
    from lorapipe.serve.registry_source import RegistryAdapterSource

    keys = KeyStore.from_dict({"admin_keys": [ADMIN_KEY],
                               "keys": {TENANT_KEY: {"tenant": "alice", "adapters": ["other-*"]}}})
    fine_tuning = FineTuning(cache / "data", str(world.base), registry=str(world.registry))
    source = ChainedAdapterSource([fine_tuning.source,
                                   RegistryAdapterSource(world.registry, cache, include_versions=True)])
    engine = Engine.from_spec(str(world.base), source=source, base_name=world.base.name, batch_window_ms=5)
    settings.setdefault("watch_interval_s", 0.2)
    return create_app(ServeSettings(keys=keys, runs_dir=world.runs, fine_tuning=fine_tuning, **settings), engine)
