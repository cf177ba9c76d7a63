"""`lorapipe serve` as a user runs it: a child process, a warning on a public interface, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from serve_support import MAX_TOKENS, QUESTION, build_world


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc, port: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.5)


def test_cli_serves_warns_when_open_on_all_interfaces_and_stops_on_sigterm(tmp_path):
    import openai

    world = build_world(tmp_path, n_adapters=1)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lorapipe", "serve", "--base", str(world.base), "--adapters",
                             str(world.adapters), "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_healthy(proc, port)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        r = c.chat.completions.create(model="ad0", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        assert r.choices[0].message.content.strip() == world.expected[world.fingerprint("ad0")]
        assert {m.id for m in c.models.list()} == {world.base_name, "ad0"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    # uvicorn drains, runs the app's shutdown (the engine finishes its work), then re-raises SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    assert "no --keys file: anyone who can reach 0.0.0.0" in " ".join(err.split())


def test_cli_serves_a_registry_and_hot_swaps_when_an_alias_moves(tmp_path):
    """`lorapipe serve --registry URL --adapters DIR`: both sources, `name@prod` follows `promote`."""
    import openai

    from lorapipe.registry import Registry

    world = build_world(tmp_path, n_adapters=1)
    v1 = world.add_version("contact", seed=501, where=tmp_path / "v1" / "contact")
    v2 = world.add_version("contact", seed=502, where=tmp_path / "v2" / "contact")
    want = {1: world.expected[world.fingerprint("contact", v1)], 2: world.expected[world.fingerprint("contact", v2)]}
    assert want[1] != want[2]
    reg = Registry(tmp_path / "registry")
    reg.push("contact", v1)
    reg.push("contact", v2)
    reg.promote("contact@v1", "prod")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LORAPIPE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "lorapipe", "serve", "--base", str(world.base), "--adapters",
                             str(world.adapters), "--registry", str(tmp_path / "registry"), "--watch", "0.2",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_healthy(proc, port)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)

        def ask(model: str) -> str:
            r = c.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
            return r.choices[0].message.content.strip()

        assert ask("contact@prod") == want[1]
        assert ask("contact@v2") == want[2]
        assert ask("ad0") == world.expected[world.fingerprint("ad0")]  # the directory's adapter, same server
        ids = {m.id for m in c.models.list()}
        assert {"ad0", "contact", "contact@prod", "contact@v1", "contact@v2"} <= ids
        reg.promote("contact@v2", "prod")
        deadline = time.monotonic() + 60
        while ask("contact@prod") != want[2]:
            assert time.monotonic() < deadline, "the server never followed the promotion"
            time.sleep(0.2)
        assert ask("contact@v1") == want[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGTERM), err


def test_cli_serve_with_a_base_that_is_no_model_says_what_it_takes():
    # without --adapters/--registry the server still serves the base and its fine-tuning jobs' models
    proc = subprocess.run([sys.executable, "-m", "lorapipe", "serve", "--base", "x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "base_model `x` is not an embedded alias" in proc.stdout + proc.stderr
