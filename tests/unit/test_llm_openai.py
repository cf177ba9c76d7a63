"""OpenAICompatLLM against the real loopback FakeOpenAI server: retries, errors, auth, pacing, usage."""

from __future__ import annotations

import socket
import time
from collections import Counter
from email.utils import formatdate

import pytest

from lorapipe.config import LLMConfig
from lorapipe.errors import ConfigError, TeacherError
from lorapipe.llm import ChatRequest, OpenAICompatLLM, make_llm
from lorapipe.llm.openai_compat import parse_retry_after
from tests.fakes import FakeOpenAI


def cfg_for(base_url: str, **kw) -> LLMConfig:
    kw = {"cache": False, "max_retries": 8, "timeout_s": 5.0, "api_key_env": None, **kw}
    return LLMConfig(kind="openai", base_url=base_url, model="fake-model", **kw)


def client(base_url: str, cache_dir=None, **kw) -> OpenAICompatLLM:
    # Short backoff keeps the fault tests fast; the retry logic is the same.
    return OpenAICompatLLM(cfg_for(base_url, **kw), cache_dir, backoff_base_s=0.005, backoff_max_s=0.05)


def ask(*contents: str, **kw) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": c}], **kw) for c in contents]


def upper(body: dict) -> str:
    return body["messages"][-1]["content"].upper()


def test_thirty_percent_faults_every_request_gets_its_answer():
    prompts = [f"prompt number {i}" for i in range(40)]
    with FakeOpenAI(responder=upper, fault_rate=0.3, seed=1,
                    fault_kinds=("429", "500", "503", "malformed", "truncated", "drop")) as srv:
        with client(srv.base_url, concurrency=6, max_retries=10) as llm:
            out = llm.complete(ask(*prompts))
        outcomes = Counter(e.outcome for e in srv.log)
    assert [c.text for c in out] == [p.upper() for p in prompts]
    assert all(c.error is None and not c.cached for c in out)
    assert outcomes["ok"] == 40
    assert sum(n for k, n in outcomes.items() if k != "ok") >= 5  # faults really happened
    assert llm.usage.calls == 40 and llm.usage.failed == 0


def test_timeouts_are_retried():
    with FakeOpenAI(faults=["timeout", "timeout"], timeout_sleep_s=3.0) as srv:
        with client(srv.base_url, timeout_s=0.3) as llm:
            out = llm.complete(ask("slow"))
        srv.settle()
        outcomes = [e.outcome for e in srv.log]
    assert out[0].text == "echo: slow"
    assert outcomes.count("ok") == 1 and len(outcomes) == 3


def test_retry_after_is_honoured():
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        time.sleep(s)

    with FakeOpenAI(faults=["429"], retry_after_s=1) as srv:
        llm = OpenAICompatLLM(cfg_for(srv.base_url), backoff_base_s=0.001, sleep=sleep)
        out = llm.complete(ask("hi"))
        log = srv.log
    assert out[0].text == "echo: hi"
    assert [e.outcome for e in log] == ["429", "ok"]
    assert len(slept) == 1 and slept[0] >= 1.0
    assert log[1].t_start - log[0].t_end >= 1.0 - 0.05  # the server saw the client wait


@pytest.mark.parametrize("value, expected", [
    ("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None), (None, None),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    assert 25 <= parse_retry_after(formatdate(time.time() + 30, usegmt=True)) <= 31


def test_permanent_failure_raises_teacher_error_naming_endpoint_status_and_body():
    with FakeOpenAI(fault_rate=1.0, fault_kinds=("503",)) as srv:
        with client(srv.base_url, max_retries=2) as llm, pytest.raises(TeacherError) as ei:
            llm.complete(ask("a"))
        assert srv.count("503") == 3
    msg = str(ei.value)
    assert f"{srv.base_url}/chat/completions" in msg
    assert "model `fake-model`" in msg and "failed after 3 attempt(s)" in msg
    assert "HTTP 503" in msg and "injected 503" in msg  # the body excerpt
    assert "raise `max_retries`" in msg


def test_permanent_failure_without_raising_gives_error_completions():
    with FakeOpenAI(fault_rate=1.0, fault_kinds=("500", "malformed")) as srv:
        with client(srv.base_url, max_retries=1, concurrency=3) as llm:
            out = llm.complete(ask("a", "b", "c"), raise_on_error=False)
        assert srv.count() == 6
    assert [c.text for c in out] == ["", "", ""]
    assert all("failed after 2 attempt(s)" in c.error for c in out)
    assert llm.usage.failed == 3 and llm.usage.calls == 0


def test_unreachable_endpoint_names_the_connection_error():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pattern = rf"127\.0\.0\.1:{port}/v1/chat/completions .*connection error"
    with client(f"http://127.0.0.1:{port}/v1", max_retries=1) as llm, pytest.raises(TeacherError, match=pattern):
        llm.complete(ask("a"))


@pytest.mark.parametrize("case, expected", [
    ("no_key", r"HTTP 401.*set the environment variable named by `api_key_env` \(LP_TEST_KEY\)"),
    ("wrong_path", r"HTTP 404.*check `base_url` \(it usually ends in /v1\)"),
])
def test_client_errors_fail_at_once_with_a_hint(case, expected, monkeypatch):
    monkeypatch.delenv("LP_TEST_KEY", raising=False)
    with FakeOpenAI(api_key="sk-right") as srv:
        base = srv.base_url if case == "no_key" else srv.base_url.removesuffix("/v1")
        with client(base, api_key_env="LP_TEST_KEY", max_retries=5) as llm, \
                pytest.raises(TeacherError, match=expected):
            llm.complete(ask("a"))
        assert srv.count() == 1  # not retried


def test_api_key_comes_from_the_named_env_var(monkeypatch):
    monkeypatch.setenv("LP_TEST_KEY", "sk-right")
    with FakeOpenAI(api_key="sk-right") as srv:
        with client(srv.base_url, api_key_env="LP_TEST_KEY") as llm:
            assert llm.complete(ask("a"))[0].text == "echo: a"
        assert [e.authorization for e in srv.log] == ["Bearer sk-right"]


def test_no_env_var_means_no_authorization_header(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI() as srv:
        with client(srv.base_url, api_key_env="OPENAI_API_KEY") as llm:
            llm.complete(ask("a"))
        assert srv.log[0].authorization is None


def test_body_carries_sampling_params_and_a_seed_per_sample():
    reqs = [ChatRequest([{"role": "user", "content": "same"}], temperature=0.9, top_p=0.8, max_tokens=17,
                        stop=("END",), sample_index=i) for i in range(3)]
    with FakeOpenAI() as srv:
        with client(srv.base_url, seed=100) as llm:
            llm.complete(reqs)
        bodies = sorted((e.body for e in srv.log), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [100, 101, 102]
    assert {(b["model"], b["temperature"], b["top_p"], b["max_tokens"], tuple(b["stop"])) for b in bodies} == {
        ("fake-model", 0.9, 0.8, 17, ("END",))}


def test_concurrency_overlaps_requests_up_to_the_limit():
    with FakeOpenAI(latency_s=0.5) as srv:
        with client(srv.base_url, concurrency=4) as llm:
            out = llm.complete(ask(*[f"q{i}" for i in range(8)]))
        assert srv.max_in_flight == 4
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(8)]


def test_requests_per_second_bounds_the_rate():
    with FakeOpenAI() as srv:
        with client(srv.base_url, concurrency=4, requests_per_second=20) as llm:
            llm.complete(ask(*[f"q{i}" for i in range(9)]))
        starts = sorted(e.t_start for e in srv.log)
    # 9 requests at 20/s with a burst of one cannot span less than 8 intervals of 50 ms.
    assert starts[-1] - starts[0] >= 0.4 - 0.03


def test_duplicate_requests_in_one_call_are_sent_once():
    with FakeOpenAI(responder=upper) as srv:
        with client(srv.base_url) as llm:
            out = llm.complete(ask("x", "y", "x"))
        assert srv.count() == 2
    assert [c.text for c in out] == ["X", "Y", "X"]
    assert [c.cached for c in out] == [False, False, True]


def test_usage_and_cost_are_summed():
    prices = {"input_per_1k": 1.0, "output_per_1k": 2.0}
    answer = {"text": "one two three", "prompt_tokens": 100, "completion_tokens": 50, "finish_reason": "length"}
    with FakeOpenAI(responder=lambda b: answer) as srv, client(srv.base_url, prices=prices) as llm:
        out = llm.complete(ask("a", "b"))
    assert out[0].finish_reason == "length" and out[0].prompt_tokens == 100
    u = llm.usage.as_dict()
    assert (u["calls"], u["prompt_tokens"], u["completion_tokens"]) == (2, 200, 100)
    assert u["cost"] == pytest.approx(0.4)


def test_progress_counts_every_request():
    seen: list[int] = []
    with FakeOpenAI() as srv, client(srv.base_url, concurrency=3) as llm:
        llm.complete(ask(*"abcde"), progress=seen.append)
    assert sum(seen) == 5


def test_make_llm_builds_the_client_and_identity_has_no_secret(monkeypatch):
    monkeypatch.setenv("LP_TEST_KEY", "sk-secret")
    cfg = LLMConfig(kind="openai", base_url="http://127.0.0.1:9/v1/", model="m", api_key_env="LP_TEST_KEY")
    llm = make_llm(cfg)
    assert isinstance(llm, OpenAICompatLLM)
    assert llm.identity() == {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert "sk-secret" not in repr(llm.identity())


def test_missing_base_url_is_a_config_error():
    cfg = LLMConfig(kind="python", function="m:f")  # a config that skipped the openai validator
    with pytest.raises(ConfigError, match="needs `base_url`"):
        OpenAICompatLLM(cfg)
