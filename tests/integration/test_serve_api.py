"""The OpenAI-compatible API, driven by the official `openai` client against a live loopback server."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_support import MAX_TOKENS, QUESTION, build_world, client, live_server


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-api"))


@pytest.fixture(scope="module")
def server(world):
    with live_server(world.engine(max_loaded_adapters=8)) as (srv, _):
        yield srv


@pytest.mark.parametrize("model", ["ad0", "ad1", "ad3", "base"])
def test_chat_answers_with_the_requested_adapter(world, server, model):
    model = world.base_name if model == "base" else model
    r = client(server).chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX_TOKENS,
                                               temperature=0)
    fingerprint = r.system_fingerprint
    assert fingerprint == (world.base_fingerprint if model == world.base_name else world.fingerprint(model))
    assert r.choices[0].message.content.strip() == world.expected[fingerprint]
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.model == model
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_adapters_change_the_answer(world):
    answers = {world.expected[world.fingerprint(f"ad{i}")] for i in range(4)}
    assert len(answers) == 4  # otherwise the other tests could not tell adapters apart


def test_streaming_yields_the_same_text_and_usage(world, server):
    stream = client(server).chat.completions.create(model="ad2", messages=QUESTION, max_tokens=MAX_TOKENS,
                                                    temperature=0, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == world.expected[world.fingerprint("ad2")]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_ends_with_done_marker(server):
    body = {"model": "ad1", "messages": QUESTION, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3


def test_n_choices_with_seed_are_reproducible(server):
    c = client(server)
    kwargs = {"model": "ad0", "messages": QUESTION, "max_tokens": 6, "temperature": 1.0, "top_p": 0.9, "n": 3,
              "seed": 7}
    a, b = c.chat.completions.create(**kwargs), c.chat.completions.create(**kwargs)
    assert [ch.index for ch in a.choices] == [0, 1, 2]
    assert [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]


def test_stop_string_cuts_the_answer(world, server):
    full = world.expected[world.fingerprint("ad1")]
    stop = full[2:4]
    r = client(server).chat.completions.create(model="ad1", messages=QUESTION, max_tokens=MAX_TOKENS,
                                               temperature=0, stop=[stop])
    content = r.choices[0].message.content
    assert stop not in content and full.startswith(content.strip()) and r.choices[0].finish_reason == "stop"


def test_text_completions(world, server):
    r = client(server).completions.create(model="ad3", prompt="Extract the contact", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens == 5
    assert r.system_fingerprint == world.fingerprint("ad3")
    chunks = list(client(server).completions.create(model="ad3", prompt="Extract the contact", max_tokens=5,
                                                    temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text


def test_models_lists_base_and_every_adapter(world, server):
    models = {m.id: m for m in client(server).models.list()}
    assert set(models) == {world.base_name, "ad0", "ad1", "ad2", "ad3"}
    assert models["ad1"].model_extra["parent"] == world.base_name
    assert models["ad1"].model_extra["root"] == "ad1"
    assert models[world.base_name].model_extra["parent"] is None
    assert client(server).models.retrieve("ad2").id == "ad2"


@pytest.mark.parametrize("kwargs, status, param, message", [
    ({"model": "nope"}, 404, "model", "adapter `nope` not found"),
    ({"model": "../ad0"}, 400, "model", "adapter name '../ad0' is invalid"),
    ({"model": "a..b"}, 400, "model", "without `..`"),
    ({"temperature": 5}, 400, "temperature", "less than or equal to 2"),
    ({"messages": []}, 400, "messages", "at least 1 item"),
    ({"n": 99}, 400, "n", "less than or equal to 16"),
    ({"max_tokens": 100000}, 400, "max_tokens", "exceeds the context of 1024"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4 non-empty stop strings"),
    ({"extra_body": {"tools": [{"type": "function"}]}}, 400, "tools", "`tools` is not supported"),
])
def test_errors_have_openai_shape(server, kwargs, status, param, message):
    args = {"model": "ad0", "messages": QUESTION, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as err:
        client(server).chat.completions.create(**args)
    assert err.value.status_code == status
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"}
    assert body["param"] == param and message in body["message"]


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/v1/nothing-here", 404, "not_found"),
    ("POST", "/v1/chat/completions", 400, "invalid_request"),  # no body at all
    ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
])
def test_http_level_errors_have_openai_shape(server, method, path, status, code):
    r = httpx.request(method, f"{server.url}{path}", timeout=30)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_health_and_metrics(world, server):
    client(server).chat.completions.create(model="ad0", messages=QUESTION, max_tokens=2)
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["base"] == world.base_name
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for metric in ("lorapipe_requests_total{", "lorapipe_completion_tokens_total{model=\"ad0\"}",
                   "lorapipe_request_latency_seconds_bucket", "lorapipe_adapters_resident",
                   "lorapipe_adapter_swaps_total{kind=\"load\"}", "lorapipe_time_to_first_token_seconds"):
        assert metric in text, metric
    assert 'endpoint="/v1/chat/completions",model="ad0",status="200"' in text
