"""The fake OpenAI server itself, driven by the official `openai` client (what other teams rely on)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes import FakeOpenAI


def oa(srv: FakeOpenAI, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, **{"api_key": "x", "max_retries": 0, **kw})


def chat(client: openai.OpenAI, content: str, **kw):
    return client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": content}], **kw)


def test_official_client_gets_scripted_answers_in_order_and_models():
    with FakeOpenAI(responder=["first", "second"], models=["a", "b"]) as srv:
        client = oa(srv)
        assert [chat(client, "x").choices[0].message.content for _ in range(2)] == ["first", "second"]
        with pytest.raises(openai.InternalServerError, match="the scripted answer queue is empty"):
            chat(client, "x")
        assert [m.id for m in client.models.list()] == ["a", "b"]
        srv.settle()
        assert [e.outcome for e in srv.log] == ["ok", "ok", "error"]


def test_streaming_chunks_join_to_the_answer():
    with FakeOpenAI(responder=lambda body: "one two  three") as srv:
        chunks = list(chat(oa(srv), "x", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two  three"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_usage_counts_words_unless_the_responder_says():
    with FakeOpenAI(responder=lambda body: "a b c") as srv:
        r = chat(oa(srv), "four words in here")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 3)


@pytest.mark.parametrize("fault, error", [
    ("429", openai.RateLimitError),
    ("500", openai.InternalServerError),
    ("503", openai.InternalServerError),
    ("drop", openai.APIConnectionError),
])
def test_scripted_faults_reach_the_client_then_it_recovers(fault, error):
    with FakeOpenAI(faults=[fault]) as srv:
        client = oa(srv)
        with pytest.raises(error):
            chat(client, "x")
        assert chat(client, "x").choices[0].message.content == "echo: x"
        srv.settle()
        assert [e.outcome for e in srv.log] == [fault, "ok"]


@pytest.mark.parametrize("fault, check", [
    ("malformed", lambda r: r.status_code == 200 and r.text.startswith('{"id": "chatcmpl-broken"')),
    ("truncated", lambda r: r.status_code == 200 and "choices" not in r.json()),
    ("429", lambda r: r.status_code == 429 and r.headers["retry-after"] == "2"),
])
def test_fault_bodies_and_headers(fault, check):
    with FakeOpenAI(faults=[fault], retry_after_s=2) as srv:
        r = httpx.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": []})
    assert check(r)


def test_timeout_fault_sleeps_past_the_client_timeout():
    with FakeOpenAI(faults=["timeout"], timeout_sleep_s=5) as srv, pytest.raises(openai.APITimeoutError):
        chat(oa(srv, timeout=0.3), "x")


def test_fault_fn_decides_per_request():
    def first_try_fails(body: dict, n: int) -> str | None:
        return "500" if n % 2 == 0 else None

    with FakeOpenAI(fault_fn=first_try_fails) as srv:
        client = oa(srv, max_retries=1)  # the official client's own retry recovers
        assert chat(client, "x").choices[0].message.content == "echo: x"
        srv.settle()
        assert [e.outcome for e in srv.log] == ["500", "ok"]


def test_fault_rate_is_reproducible_with_a_seed():
    def outcomes(seed: int) -> list[str]:
        with FakeOpenAI(fault_rate=0.5, fault_kinds=("500",), seed=seed) as srv, httpx.Client() as http:
            for _ in range(20):
                http.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": []})
            srv.settle()
            return [e.outcome for e in srv.log]

    assert outcomes(1) == outcomes(1)
    assert {"ok", "500"} == set(outcomes(1))


@pytest.mark.parametrize("kw, expected", [
    ({"fault_kinds": ("418",)}, "unknown fault '418'; choose from 429, 500, 503, timeout, malformed, truncated, drop"),
    ({"faults": ["500", "boom"]}, "unknown fault 'boom'"),
    ({"fault_rate": 1.5}, r"fault_rate must be in \[0, 1\], got 1.5"),
])
def test_bad_settings_are_rejected(kw, expected):
    with pytest.raises(ValueError, match=expected):
        FakeOpenAI(**kw)


@pytest.mark.parametrize("key, status, outcome", [("right", 200, "ok"), ("wrong", 401, "unauthorized")])
def test_api_key_is_checked_when_set(key, status, outcome):
    with FakeOpenAI(api_key="right") as srv:
        r = httpx.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": []},
                       headers={"Authorization": f"Bearer {key}"})
        assert (r.status_code, srv.log[0].outcome) == (status, outcome)


@pytest.mark.parametrize("body, status", [
    ({"messages": []}, 400),  # no model
    ({"model": "m", "messages": "hi"}, 400),
    (b"not json", 400),
])
def test_bad_requests_get_400(body, status):
    with FakeOpenAI() as srv:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(f"{srv.base_url}/chat/completions", **kw)
        assert r.status_code == status and "`model` and a `messages` list" in r.text
        assert srv.log[0].outcome == "bad_request"


def test_a_client_that_has_its_answer_finds_it_logged():
    """The outcome is logged before the answer's last bytes go out: no settle() needed to read it
    (CI once read "pending" here, when the server thread logged after writing)."""
    with FakeOpenAI(fault_fn=lambda body, n: "500" if n % 3 == 2 else None) as srv, httpx.Client() as c:
        for i in range(120):
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "stream": i % 4 == 1}
            r = c.post(f"{srv.base_url}/chat/completions", json=body if i % 5 else {"messages": []})
            r.read()
            last = srv.log[-1]
            assert (last.outcome, last.status) != ("pending", None) and last.status == r.status_code, (i, last)
