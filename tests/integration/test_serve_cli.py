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


def test_cli_serves_warns_when_open_on_all_interfaces_and_stops_on_sigterm(tmp_path):
    import openai

    world = build_world(tmp_path, n_adapters=1)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lorapipe", "serve", "--base", str(world.base), "--adapters",
                             str(world.adapters), "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.5)
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
