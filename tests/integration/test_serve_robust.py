"""The server under clients that leave, large or odd bodies and a full queue (issues 19 and 20).

Each test reproduces a failure of the server as it was: rows of clients that disconnected kept
decoding and kept their lease (in-flight never returned to 0, replaced adapter versions were never
freed), a 20 MB body was tokenized on the event loop (every tenant stalled), `seed >= 2**64` was a
500, queued requests waited in silence, and a 404 showed a path on the server's disk.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from serve_support import QUESTION, build_world, client, live_server, metric, slow_steps

from lorapipe.serve.app import ServeSettings
from lorapipe.testing import build_tiny_adapter

LONG = {"max_tokens": 900, "ignore_eos": True, "temperature": 0}  # ~90 s at 0.1 s a step: never waited for


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-robust"), n_adapters=2)


def wait_for(what, predicate, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; a generous bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.1)


def chat(srv, timeout: float, **body) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "ad0", "messages": QUESTION, **body},
                      timeout=timeout)


def test_non_streaming_clients_that_leave_free_their_rows(world, monkeypatch):
    engine = world.engine(max_batch_size=16)
    slow_steps(monkeypatch, engine, 0.1)
    with live_server(engine) as (srv, _):
        def leave() -> None:
            with pytest.raises(httpx.ReadTimeout):
                chat(srv, timeout=1.5, **LONG)

        threads = [threading.Thread(target=leave) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        wait_for("in-flight back to 0", lambda: metric(srv, "lorapipe_requests_in_flight") == 0)
        r = chat(srv, timeout=60, max_tokens=4, temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert metric(srv, "lorapipe_requests_in_flight") == 0


def test_streaming_clients_that_leave_free_their_rows(world, monkeypatch):
    engine = world.engine()
    slow_steps(monkeypatch, engine, 0.05)
    with live_server(engine) as (srv, _):
        for _ in range(5):
            stream = client(srv).chat.completions.create(model="ad1", messages=QUESTION, stream=True, max_tokens=900,
                                                         temperature=0, extra_body={"ignore_eos": True})
            next(iter(stream))
            stream.close()
        wait_for("in-flight back to 0", lambda: metric(srv, "lorapipe_requests_in_flight") == 0)


def test_replaced_versions_are_freed_after_their_clients_leave(world, tmp_path, monkeypatch):
    versions = [build_tiny_adapter(world.base, tmp_path / f"v{i}" / "ad0", seed=700 + i) for i in range(2)]
    engine = world.engine(max_loaded_adapters=2)
    slow_steps(monkeypatch, engine, 0.05)
    with live_server(engine) as (srv, _):
        for i in range(6):
            body = {"model": "ad0", "messages": QUESTION, "stream": True, **LONG}
            with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body, timeout=60) as r:
                next(r.iter_lines())  # one chunk, then hang up mid-stream
            load = {"name": "ad0", "path": str(versions[i % 2])}
            assert httpx.post(f"{srv.url}/admin/adapters", json=load, timeout=60).status_code == 200
        wait_for("in-flight back to 0", lambda: metric(srv, "lorapipe_requests_in_flight") == 0)
        wait_for("retired versions freed", lambda: metric(srv, "lorapipe_adapters_resident") <= 2)


def test_oversize_body_is_a_413_before_it_is_read(world):
    with live_server(world.engine(), ServeSettings(watch_interval_s=None, max_request_bytes=100_000)) as (srv, _):
        big = [{"role": "user", "content": "x" * 200_000}]
        r = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "ad0", "messages": big}, timeout=60)
        assert r.status_code == 413
        err = r.json()["error"]
        assert err["code"] == "request_too_large" and "100000 bytes" in err["message"]

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield json.dumps({"model": "ad0", "messages": big}).encode()

        r = httpx.post(f"{srv.url}/v1/chat/completions", content=chunks(), timeout=60,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert chat(srv, timeout=60, max_tokens=2).status_code == 200


def test_a_prompt_far_over_the_context_is_refused_without_tokenizing(world, monkeypatch):
    engine = world.engine()
    calls = []
    monkeypatch.setattr(engine, "encode_chat", lambda messages: calls.append(1) or [1])
    with live_server(engine) as (srv, _):
        r = chat(srv, timeout=60, messages=[{"role": "user", "content": "word " * 400_000}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "characters" in r.json()["error"]["message"] and calls == []


def test_health_answers_while_a_large_prompt_is_being_tokenized(world, monkeypatch):
    engine = world.engine()
    real = engine.encode_chat
    started, release = threading.Event(), threading.Event()

    def blocked(messages):  # stands for a long tokenization
        started.set()
        release.wait(60)
        return real(messages)

    monkeypatch.setattr(engine, "encode_chat", blocked)
    with live_server(engine) as (srv, _):
        result = {}
        t = threading.Thread(target=lambda: result.update(r=chat(srv, timeout=120, max_tokens=2)))
        t.start()
        try:
            assert started.wait(30)
            health = httpx.get(f"{srv.url}/health", timeout=10)  # a ReadTimeout here: the loop is blocked
            assert health.status_code == 200
        finally:
            release.set()
            t.join(120)
        assert result["r"].status_code == 200


@pytest.mark.parametrize("seed", [2**64, 2**70, -(2**63) - 1])
def test_out_of_range_seed_is_a_400_and_the_connection_stays_usable(world, seed):
    with live_server(world.engine()) as (srv, _), httpx.Client(timeout=60) as http:
        url = f"{srv.url}/v1/chat/completions"
        r = http.post(url, json={"model": "ad0", "messages": QUESTION, "max_tokens": 2, "seed": seed})
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
        ok = http.post(url, json={"model": "ad0", "messages": QUESTION, "max_tokens": 2, "seed": 2**64 - 1, "n": 3,
                                  "temperature": 1})
        assert ok.status_code == 200


def test_requests_queued_past_the_queue_timeout_get_503_with_retry_after(world, monkeypatch):
    engine = world.engine(max_batch_size=1, queue_timeout_s=1.0)
    slow_steps(monkeypatch, engine, 0.05)
    with live_server(engine) as (srv, _):
        busy = threading.Thread(target=lambda: chat(srv, timeout=120, max_tokens=80, ignore_eos=True))
        busy.start()
        wait_for("the first request to start", lambda: metric(srv, "lorapipe_requests_in_flight") == 1)
        queued = chat(srv, timeout=60, max_tokens=2)
        assert queued.status_code == 503, queued.text
        assert int(queued.headers["retry-after"]) >= 1
        assert queued.json()["error"]["code"] == "queue_timeout"
        body = {"model": "ad0", "messages": QUESTION, "max_tokens": 2, "stream": True}
        streamed = httpx.post(f"{srv.url}/v1/chat/completions", json=body, timeout=60)
        assert streamed.status_code == 503 and "retry-after" in streamed.headers
        busy.join(120)
        wait_for("in-flight back to 0", lambda: metric(srv, "lorapipe_requests_in_flight") == 0)


def test_a_stream_with_nothing_to_send_yet_tells_the_client_the_server_is_at_work(world, monkeypatch):
    engine = world.engine()
    busy = slow_steps(monkeypatch, engine, 1.5)  # each forward pass: longer than the client waits for a byte
    with live_server(engine, ServeSettings(watch_interval_s=None, keepalive_s=0.2)) as (srv, _):
        first = threading.Thread(target=lambda: chat(srv, timeout=120, max_tokens=3))
        first.start()
        assert busy.wait(30)  # the scheduler is inside a forward pass: the next request has room but waits
        body = {"model": "ad0", "messages": QUESTION, "max_tokens": 2, "stream": True}
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body,
                          timeout=httpx.Timeout(60, read=0.8)) as r:
            lines = list(r.iter_lines())
        assert ": keep-alive" in lines and [x for x in lines if x][-1] == "data: [DONE]"
        stream = client(srv).chat.completions.create(model="ad0", messages=QUESTION, max_tokens=2, stream=True)
        assert [c.choices[0].finish_reason for c in stream if c.choices][-1] in ("stop", "length")
        first.join(120)


def test_not_found_shows_no_server_path(world):
    with live_server(world.engine()) as (srv, _):
        r = chat(srv, timeout=60, model="nope", max_tokens=2)
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "adapter `nope` not found" in message
    assert str(world.root) not in message and "adapter_config.json" not in message
