"""Throughput of the endpoint teacher client: concurrency 16 vs 1, against a 50 ms-latency server.

    python bench/teacher_concurrency.py [--requests 160] [--latency 0.05] [--concurrency 16]

Starts the fake OpenAI server (tests/fakes) in a child process, so the server's threads do not
compete with the client for this interpreter's GIL, sends the same number of distinct requests
with the cache off at concurrency 1 and at concurrency N, and prints requests/s for both and, last,
their ratio (target: >= 12x at N=16; the ideal is N).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorapipe.config import LLMConfig
from lorapipe.llm import ChatRequest, OpenAICompatLLM


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", "--latency", str(latency)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # "base_url=http://127.0.0.1:PORT/v1"
    if not line.startswith("base_url="):
        proc.kill()
        raise SystemExit(f"the fake server did not start (printed {line!r})")
    return proc, line.split("=", 1)[1]


def rate(base_url: str, concurrency: int, n: int, tag: str) -> float:
    """Requests per second for ``n`` distinct requests at ``concurrency`` (after a warm-up)."""
    cfg = LLMConfig(kind="openai", base_url=base_url, model="fake-model", concurrency=concurrency, cache=False,
                    max_retries=0, api_key_env=None)
    with OpenAICompatLLM(cfg) as llm:
        llm.complete([ChatRequest([{"role": "user", "content": f"warm-{tag}-{i}"}]) for i in range(concurrency)])
        reqs = [ChatRequest([{"role": "user", "content": f"{tag}-{i}"}]) for i in range(n)]
        t0 = time.perf_counter()
        out = llm.complete(reqs)
        dt = time.perf_counter() - t0
    assert all(c.text == f"echo: {tag}-{i}" for i, c in enumerate(out)), "wrong answers"
    return n / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=160)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    proc, base_url = start_server(a.latency)
    try:
        serial = rate(base_url, 1, a.requests, "c1")
        parallel = rate(base_url, a.concurrency, a.requests, f"c{a.concurrency}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"requests: {a.requests}, server latency: {a.latency * 1000:.0f} ms")
    print(f"concurrency 1:  {serial:8.1f} req/s")
    print(f"concurrency {a.concurrency}: {parallel:8.1f} req/s")
    print(f"ratio: {parallel / serial:.1f}x (target >= 12x)")


if __name__ == "__main__":
    main()
