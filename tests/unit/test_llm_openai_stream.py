"""OpenAICompatLLM against a slow or overloaded endpoint (issue 20): slow is not dead, overload backs off.

The client streams, so ``timeout_s`` bounds the wait for the first byte and between two chunks, not
the whole answer; timeouts, 503 and 429 lower its concurrency (AIMD) instead of retrying at the same
rate, and it says so in the log. Endpoints that cannot stream still work.
"""

from __future__ import annotations

import logging

import pytest

from lorapipe.config import LLMConfig
from lorapipe.llm import ChatRequest, OpenAICompatLLM
from lorapipe.llm.congestion import AdaptiveLimit
from tests.fakes import FakeOpenAI

WORDS = "one two three four five six seven eight"


def client(base_url: str, backoff_base_s: float = 0.01, **kw) -> OpenAICompatLLM:
    kw = {"cache": False, "max_retries": 1, "timeout_s": 1.0, "api_key_env": None, **kw}
    cfg = LLMConfig(kind="openai", base_url=base_url, model="fake-model", **kw)
    return OpenAICompatLLM(cfg, backoff_base_s=backoff_base_s, backoff_max_s=1.0)


def ask(*contents: str) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": c}]) for c in contents]


def test_an_answer_slower_than_the_timeout_arrives_when_its_chunks_keep_coming():
    # 8 words, 0.4 s apart: 2.8 s in all against a 1 s timeout; a whole-answer timeout fails every attempt
    with FakeOpenAI(responder=WORDS, chunk_delay_s=0.4) as srv:
        with client(srv.base_url) as llm:
            out = llm.complete(ask("slow"))
        assert srv.count() == 1  # not one retry
        body = srv.log[0].body
    assert out[0].text == WORDS and out[0].error is None
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_usage_and_finish_reason_come_from_the_stream():
    answer = {"text": "a b", "prompt_tokens": 100, "completion_tokens": 50, "finish_reason": "length"}
    with FakeOpenAI(responder=lambda b: answer) as srv, client(srv.base_url) as llm:
        out = llm.complete(ask("x"))
    assert (out[0].text, out[0].prompt_tokens, out[0].completion_tokens, out[0].finish_reason) == (
        "a b", 100, 50, "length")


def test_silence_past_the_timeout_is_still_a_timeout():
    with FakeOpenAI(faults=["timeout"], timeout_sleep_s=3.0) as srv:
        with client(srv.base_url, timeout_s=0.3, max_retries=2) as llm:
            out = llm.complete(ask("q"))
        srv.settle()
        assert [e.outcome for e in srv.log][1:] == ["ok"] and srv.count() == 2  # the first: timeout/client_gone
    assert out[0].text == "echo: q"


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_endpoints_that_do_not_stream_still_work(mode, caplog):
    with FakeOpenAI(stream_mode=mode) as srv:
        with client(srv.base_url) as llm, caplog.at_level(logging.WARNING, "lorapipe.llm"):
            out = llm.complete(ask("a", "b", "c"))
        outcomes = [e.outcome for e in srv.log]
    assert [c.text for c in out] == ["echo: a", "echo: b", "echo: c"]
    if mode == "reject":  # refused once per request in flight at the time, then every request without `stream`
        assert 1 <= outcomes.count("bad_request") <= 3 and outcomes.count("ok") == 3
        assert caplog.text.count("does not stream") == 1
    else:
        assert outcomes == ["ok"] * 3


def test_stream_off_in_the_config_sends_plain_requests():
    with FakeOpenAI() as srv, client(srv.base_url, stream=False) as llm:
        assert llm.complete(ask("a"))[0].text == "echo: a"
        assert "stream" not in srv.log[0].body


@pytest.mark.parametrize("fault", ["503", "429", "timeout"])
def test_overload_lowers_the_concurrency_and_every_request_gets_its_answer(fault, caplog):
    """An endpoint that serves 3 at a time and refuses (or stalls) the rest, like a busy local server."""
    box: list[FakeOpenAI] = []
    # generous timeouts and retries: on a loaded CI machine an answer that is not stalled can take a while
    srv = FakeOpenAI(latency_s=0.05, timeout_sleep_s=1.2, retry_after_s=None,
                     fault_fn=lambda body, n: fault if box[0].in_flight > 3 else None)
    box.append(srv)
    prompts = [f"q{i}" for i in range(16)]
    # the fake, like a server that does not cancel, works on past a client's timeout: back off for real
    with srv, client(srv.base_url, concurrency=8, max_retries=10, timeout_s=1.0, backoff_base_s=0.2) as llm, \
            caplog.at_level(logging.WARNING, "lorapipe.llm"):
        out = llm.complete(ask(*prompts))
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts]
    assert llm.usage.failed == 0
    assert llm.congestion.cuts >= 1 and llm.congestion.lowest <= 4
    assert "lowering concurrency 8 -> 4" in caplog.text


def test_aimd_halves_once_per_round_and_climbs_back():
    limit = AdaptiveLimit(8)
    tickets = [limit.acquire() for _ in range(8)]
    assert limit.in_flight == 8
    assert limit.release(tickets[0], congested=True) == (8, 4)
    assert limit.release(tickets[1], congested=True) is None  # sent before the cut: same signal, no new cut
    for t in tickets[2:]:
        limit.release(t)
    assert limit.in_flight == 0 and 4 <= limit.limit < 5
    again = limit.acquire()
    assert limit.release(again, congested=True) == (4, 2)  # a request sent after the cut cuts again
    for _ in range(200):
        limit.release(limit.acquire())
    assert limit.limit == 8 and limit.lowest == 2 and limit.cuts == 2
