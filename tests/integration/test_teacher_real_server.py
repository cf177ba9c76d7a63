"""The generate stage with an `openai` teacher that is a real, slow `lorapipe serve` (issue 20, item 4).

The server is a child process on a loopback port serving a tiny random model whose every forward
pass sleeps (tests/integration/slow_serve.py): an answer takes several times the client's
`timeout_s`, as a big teacher on a CPU does. The client as it was (whole-answer timeouts, retries at
the same rate) failed every row against it; streaming and backing off, every row is generated, and
no request is left running on the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from test_serve_cli import free_port, wait_healthy

from lorapipe.config import load_config
from lorapipe.pipeline import Pipeline
from lorapipe.testing import build_tiny_model

HERE = Path(__file__).parent
STEP_S = 0.1  # per forward pass; 30 tokens: 3 s an answer against a 1 s timeout
INPUTS = ["Hi, I'm Ann Lee, write to ann.lee@example.com", "Bob Stone here, bob@stone.io",
          "Carla Diaz (carla@mail.org) about the delivery", "Dan Wu; dan.wu@corp.net, thanks",
          "Eve Park, eve.park@park.dev", "Frank Moe: frank@moe.com", "no contact in this one", "Zoe, zoe@k.io"]


def in_flight(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("lorapipe_requests_in_flight ")))


def test_generate_against_a_slow_lorapipe_serve_completes_every_row(tmp_path):
    base = build_tiny_model(tmp_path / "tiny-teacher")
    (tmp_path / "adapters").mkdir()
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "slow_serve.py"), str(STEP_S), "serve", "--base", str(base),
                             "--adapters", str(tmp_path / "adapters"), "--port", str(port), "--watch", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_healthy(proc, port)
        (tmp_path / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in INPUTS))
        (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
            "task": {"name": "contacts", "description": "Extract the sender's name and e-mail as JSON.",
                     "system_prompt": "Return the sender's name and e-mail as JSON."},
            "data": {"inputs": "inputs.jsonl"},
            "teacher": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": base.name,
                        "api_key_env": None, "timeout_s": 1.0, "max_tokens": 30, "concurrency": 8,
                        "cache": False,
                        "few_shot": [{"input": "Ann, ann@x.org", "output": '{"name": "Ann", "email": "ann@x.org"}'}]},
        }))
        cfg = load_config(tmp_path / "pipeline.yaml")
        manifest = Pipeline(cfg).run_stage("generate")
        rows = (cfg.run_dir / "generate" / "generated.jsonl").read_text().splitlines()
        assert manifest.metrics["failed"] == 0 and manifest.metrics["rows"] == len(INPUTS) == len(rows)
        assert in_flight(port) == 0
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": base.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
