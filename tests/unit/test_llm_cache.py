"""The answer cache: reruns make no calls, keys separate what must differ, kill -9 loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from lorapipe.config import LLMConfig
from lorapipe.errors import TeacherError
from lorapipe.llm import ChatRequest, Completion, OpenAICompatLLM, ResponseCache, request_key
from lorapipe.llm.cache import CACHE_FILE
from tests.fakes import FakeOpenAI

# The client run in a child process that the crash tests kill -9.
CLIENT = """
import sys
from lorapipe.config import LLMConfig
from lorapipe.llm import ChatRequest, OpenAICompatLLM
base_url, cache_dir, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = LLMConfig(kind="openai", base_url=base_url, model="fake-model", concurrency=conc, api_key_env=None)
OpenAICompatLLM(cfg, cache_dir).complete([ChatRequest([{"role": "user", "content": f"p{i}"}]) for i in range(n)])
"""


def upper(body: dict) -> str:
    return body["messages"][-1]["content"].upper()


def client(base_url: str, cache_dir, **kw) -> OpenAICompatLLM:
    cfg = LLMConfig(kind="openai", base_url=base_url, model="fake-model", api_key_env=None, **kw)
    return OpenAICompatLLM(cfg, cache_dir, backoff_base_s=0.005, backoff_max_s=0.05)


def prompts(n: int) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": f"p{i}"}]) for i in range(n)]


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the client exited (code {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_second_run_makes_no_http_calls(tmp_path):
    with FakeOpenAI(responder=upper) as srv:
        with client(srv.base_url, tmp_path, concurrency=4) as llm:
            first = llm.complete(prompts(10))
        calls = srv.count()
        with client(srv.base_url, tmp_path, concurrency=4) as llm:
            second = llm.complete(prompts(10))
        assert srv.count() == calls == 10
    assert [c.text for c in second] == [c.text for c in first] == [f"P{i}" for i in range(10)]
    assert all(c.cached for c in second) and not any(c.cached for c in first)
    assert llm.usage.cached == 10 and llm.usage.calls == 0


@pytest.mark.parametrize("cache, cache_dir_given", [(False, True), (True, False)])
def test_cache_off_or_without_a_directory_calls_again(tmp_path, cache, cache_dir_given):
    with FakeOpenAI() as srv:
        for _ in range(2):
            with client(srv.base_url, tmp_path if cache_dir_given else None, cache=cache) as llm:
                llm.complete(prompts(3))
        assert srv.count() == 6
    assert not (tmp_path / CACHE_FILE).exists()


def test_failed_answers_are_not_cached(tmp_path):
    with FakeOpenAI(faults=["500", "500"]) as srv:
        with client(srv.base_url, tmp_path, max_retries=1) as llm:
            assert llm.complete(prompts(1), raise_on_error=False)[0].error
            assert llm.complete(prompts(1))[0].text == "echo: p0"
        assert srv.count("ok") == 1


BASE = {"identity": {"kind": "openai", "base_url": "http://a/v1", "model": "m"},
        "request": ChatRequest([{"role": "user", "content": "hi"}]), "seed": 0}


@pytest.mark.parametrize("name, change", [
    ("endpoint", {"identity": {"kind": "openai", "base_url": "http://b/v1", "model": "m"}}),
    ("model", {"identity": {"kind": "openai", "base_url": "http://a/v1", "model": "m2"}}),
    ("messages", {"request": ChatRequest([{"role": "user", "content": "hi!"}])}),
    ("role", {"request": ChatRequest([{"role": "system", "content": "hi"}])}),
    ("temperature", {"request": ChatRequest([{"role": "user", "content": "hi"}], temperature=0.0)}),
    ("top_p", {"request": ChatRequest([{"role": "user", "content": "hi"}], top_p=0.5)}),
    ("max_tokens", {"request": ChatRequest([{"role": "user", "content": "hi"}], max_tokens=9)}),
    ("stop", {"request": ChatRequest([{"role": "user", "content": "hi"}], stop=("x",))}),
    ("sample_index", {"request": ChatRequest([{"role": "user", "content": "hi"}], sample_index=1)}),
    ("seed", {"seed": 1}),
])
def test_key_changes_with_everything_that_changes_the_answer(name, change):
    other = {**BASE, **change}
    assert request_key(**other) != request_key(**BASE)
    assert request_key(**BASE) == request_key(**dict(BASE))  # and is stable


def test_corrupt_cache_file_is_reported_with_the_fix(tmp_path):
    (tmp_path / CACHE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(TeacherError, match=rf"{CACHE_FILE}: cannot open the answer cache .*delete the file"):
        ResponseCache(tmp_path)


WRITER = """
import sys
from lorapipe.llm.cache import ResponseCache
from lorapipe.llm.base import Completion
cache = ResponseCache(sys.argv[1])
for i in range(150):
    cache.put(f"{sys.argv[2]}-{i}", Completion(text=f"answer {i}"))
"""


def test_processes_and_threads_share_one_cache(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"proc{j}"]) for j in range(2)]
    cache = ResponseCache(tmp_path)
    threads = [threading.Thread(target=lambda j=j: [cache.put(f"thread{j}-{i}", Completion(text="t"))
                                                    for i in range(150)]) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(cache) == 750 and cache.integrity_ok()
    assert cache.get("proc1-149") == Completion(text="answer 149", cached=True)


def test_cache_survives_kill_9_while_requests_are_in_flight(tmp_path):
    """Kill the client while both workers wait on the server: every answer received is kept."""
    n, fast, conc = 12, 6, 2
    slow = threading.Event()
    slow.set()

    def latency(body: dict) -> float:  # p0..p5 answer at once; p6.. hang while `slow` is set
        return 60.0 if slow.is_set() and int(body["messages"][-1]["content"][1:]) >= fast else 0.01

    def hanging() -> int:
        return sum(1 for e in srv.log if e.outcome == "pending" and int(e.last_user[1:]) >= fast)

    with FakeOpenAI(responder=upper, latency_s=latency) as srv:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, srv.base_url, str(tmp_path), str(n), str(conc)])
        try:
            # Once both workers sent a slow request, each has finished (and cached) its earlier ones.
            wait_until(lambda: hanging() == conc, proc, "both workers reached the slow requests")
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        answered_before = sorted(e.last_user for e in srv.log if e.outcome == "ok")
        cache = ResponseCache(tmp_path)
        assert cache.integrity_ok() and len(cache) == fast
        slow.clear()
        srv.clear_log()
        with client(srv.base_url, tmp_path, concurrency=conc) as llm:
            out = llm.complete(prompts(n))
        rerun = sorted(e.last_user for e in srv.log)
    assert answered_before == sorted(f"p{i}" for i in range(fast))
    assert [c.text for c in out] == [f"P{i}" for i in range(n)]
    assert [c.cached for c in out] == [True] * fast + [False] * (n - fast)
    assert rerun == sorted(f"p{i}" for i in range(fast, n))  # nothing received is asked again


def test_cache_survives_kill_9_at_an_arbitrary_moment(tmp_path):
    """Kill a fast-running client at whatever it is doing: the file stays sound, at most the
    requests in flight are lost, and the rerun asks for exactly what the cache lacks."""
    n, conc = 200, 4
    with FakeOpenAI(responder=upper, latency_s=0.01) as srv:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, srv.base_url, str(tmp_path), str(n), str(conc)])
        try:
            wait_until(lambda: srv.count("ok") >= 20, proc, "20 answers")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        answered_before = {e.last_user for e in srv.log if e.outcome == "ok"}
        cache = ResponseCache(tmp_path)
        assert cache.integrity_ok()
        kept = len(cache)
        assert kept < n, "the client finished before the kill; the test proved nothing"
        assert kept >= len(answered_before) - conc  # only answers in flight can be lost
        srv.clear_log()
        with client(srv.base_url, tmp_path, concurrency=conc) as llm:
            out = llm.complete(prompts(n))
        rerun = [e.last_user for e in srv.log]
    assert [c.text for c in out] == [f"P{i}" for i in range(n)]
    assert sum(c.cached for c in out) == kept
    assert sorted(rerun) == sorted(f"p{i}" for i, c in enumerate(out) if not c.cached)
