"""Shared fixtures: tiny random models built from a config (no download), and test hygiene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet, offline, deterministic: tests never reach a hub, and one thread per test process keeps tiny
# models fast on a loaded 2-core machine (thread hand-offs cost more than the maths).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 32) with a ChatML tokenizer, written once per session."""
    from lorapipe.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """Point the registry and the server's data dir at the test's tmp dir; the model cache stays shared
    (converting is slow)."""
    monkeypatch.setenv("LORAPIPE_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("LORAPIPE_DATA_DIR", str(tmp_path / "serve-data"))
    monkeypatch.setenv("LORAPIPE_QUIET", os.environ.get("LORAPIPE_QUIET", "0"))
