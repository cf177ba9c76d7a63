"""The protocol helpers: requests built from an LLMConfig, usage accounting."""

from __future__ import annotations

import pytest

from lorapipe.config import LLMConfig
from lorapipe.llm import LLM, ChatRequest, Completion, Usage, make_llm

MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("overrides, expected", [
    ({}, {"temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": (), "sample_index": 0}),
    ({"temperature": 0.0, "sample_index": 2}, {"temperature": 0.0, "top_p": 0.9, "max_tokens": 50, "stop": (),
                                                "sample_index": 2}),
    ({"stop": ["\n\n"], "max_tokens": 5}, {"temperature": 0.3, "top_p": 0.9, "max_tokens": 5, "stop": ("\n\n",),
                                          "sample_index": 0}),
])
def test_request_from_config(overrides, expected):
    cfg = LLMConfig(kind="python", function="m:f", temperature=0.3, top_p=0.9, max_tokens=50)
    req = ChatRequest.from_config(cfg, MSGS, **overrides)
    assert {k: getattr(req, k) for k in expected} == expected and req.messages == MSGS


def test_usage_counts_calls_cache_hits_failures_and_cost():
    class P:
        input_per_1k, output_per_1k = 2.0, 4.0

    u = Usage()
    for c in [Completion("a", 500, 250), Completion("b", 10, 10, cached=True), Completion("", error="boom")]:
        u.add(c, P())
    assert u.as_dict() == {"calls": 1, "cached": 1, "failed": 1, "prompt_tokens": 500, "completion_tokens": 250,
                           "cost": pytest.approx(2.0)}


def test_every_client_satisfies_the_protocol(tmp_path):
    (tmp_path / "lp_proto_teacher.py").write_text("def f(messages, **kw):\n    return 'x'\n")
    clients = [make_llm(LLMConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="m")),
               make_llm(LLMConfig(kind="python", function="lp_proto_teacher:f"), search_path=tmp_path)]
    assert all(isinstance(c, LLM) for c in clients)
