"""Shared helpers for the serve tests: a tiny base, adapters with known greedy answers, a live server."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lorapipe.generation import generate
from lorapipe.serve.adapters import DirectoryAdapterSource, content_version
from lorapipe.serve.app import ServeSettings, create_app
from lorapipe.serve.engine import Engine
from lorapipe.serve.server import ServerThread
from lorapipe.testing import build_tiny_adapter, build_tiny_model

QUESTION = [{"role": "user", "content": "Hi, I'm Ann Lee, reach me at ann.lee@example.com"}]
MAX_TOKENS = 8


@dataclass
class World:
    """A tiny base, an adapter directory, and the greedy answer of every adapter version."""

    root: Path
    base: Path
    adapters: Path
    expected: dict[str, str] = field(default_factory=dict)  # fingerprint "name:version" -> answer

    @property
    def base_name(self) -> str:
        return self.base.name

    @property
    def base_fingerprint(self) -> str:
        from lorapipe.models import resolve

        return f"{self.base_name}:{resolve(str(self.base)).weights_sha256[:12]}"

    def fingerprint(self, name: str, path: Path | None = None) -> str:
        return f"{name}:{content_version(path or self.adapters / name)}"

    def add_version(self, name: str, seed: int, where: Path | None = None, max_tokens: int = MAX_TOKENS,
                    messages: list[dict] | None = None, **adapter_kwargs) -> Path:
        """Build an adapter at ``where`` (default: the adapter directory) and record its greedy answer."""
        path = where or self.adapters / name
        build_tiny_adapter(self.base, path, seed=seed, **adapter_kwargs)
        self.expected[self.fingerprint(name, path)] = reference_answer(self.base, path, messages or QUESTION,
                                                                       max_tokens)
        return path

    def engine(self, **kwargs) -> Engine:
        kwargs.setdefault("batch_window_ms", 5)
        # answers are compared with plain PEFT's, exactly: fp32 weights (bf16/fp16: tests/unit/test_decoding.py)
        kwargs.setdefault("weights", "fp32")
        return Engine.from_spec(str(self.base), source=DirectoryAdapterSource(self.adapters),
                                base_name=self.base_name, **kwargs)


def reference_answer(base: Path, adapter: Path | None, messages: list[dict], max_tokens: int) -> str:
    """The greedy answer computed offline with plain PEFT + `model.generate` (not the server's code)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    tok = AutoTokenizer.from_pretrained(base)
    return generate(model, tok, [messages], max_new_tokens=max_tokens, fast=False)[0].text


def build_world(root: Path, n_adapters: int = 4) -> World:
    base = build_tiny_model(root / "tiny-base")
    world = World(root, base, root / "adapters")
    world.adapters.mkdir()
    for i in range(n_adapters):
        world.add_version(f"ad{i}", seed=100 + i)
    world.expected[world.base_fingerprint] = reference_answer(base, None, QUESTION, MAX_TOKENS)
    return world


def replace_dir(src: Path, dst: Path) -> None:
    """Swap ``dst``'s content for ``src``'s the way a deploy would: atomically."""
    from lorapipe.manifest import atomic_dir

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


@contextlib.contextmanager
def live_server(engine: Engine, settings: ServeSettings | None = None) -> Iterator[tuple[ServerThread, object]]:
    """A real server on a free loopback port and the app it serves."""
    settings = settings or ServeSettings(watch_interval_s=None)
    app = create_app(settings, engine)
    with ServerThread(app) as srv:
        yield srv, app


def client(srv: ServerThread, key: str = "none", **kwargs):
    import openai

    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 60)
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, **kwargs)


def metric(srv: ServerThread, name: str) -> float:
    """The value of an unlabelled metric on the server's /metrics page."""
    import httpx

    for line in httpx.get(f"{srv.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


def slow_steps(monkeypatch, engine: Engine, delay_s: float):
    """Make every forward pass of ``engine`` take at least ``delay_s`` (a slow device, a busy CPU);
    the returned event is set when one starts."""
    import threading
    import time

    real = engine._forward
    started = threading.Event()

    def slow(*args):
        started.set()
        time.sleep(delay_s)
        return real(*args)

    monkeypatch.setattr(engine, "_forward", slow)
    return started
