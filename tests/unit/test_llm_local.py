"""LocalLLM with the tiny random model: batching, seeding, caching, lazy loading."""

from __future__ import annotations

import pytest

from lorapipe.config import LLMConfig
from lorapipe.errors import TeacherError
from lorapipe.llm import ChatRequest, LocalLLM, make_llm
from lorapipe.testing import build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def cfg(tiny_dir, **kw) -> LLMConfig:
    return LLMConfig(kind="local", model=str(tiny_dir), **{"max_tokens": 6, **kw})


def reqs(n: int, **kw) -> list[ChatRequest]:
    # Sampled, not greedy: the random tiny model's greedy answer is an empty string, which would make
    # "same answer" checks vacuous.
    return [ChatRequest([{"role": "user", "content": f"Extract the contact {i}: ann@example.com"}],
                        **{"max_tokens": 6, "temperature": 1.0, **kw}) for i in range(n)]


def test_answers_in_batches_of_batch_size(tiny_dir):
    seen: list[int] = []
    llm = make_llm(cfg(tiny_dir, batch_size=3, cache=False))
    assert isinstance(llm, LocalLLM)
    out = llm.complete(reqs(7), progress=seen.append)
    assert seen == [3, 3, 1]
    assert len(out) == 7 and all(c.text and c.error is None for c in out)
    assert all(c.prompt_tokens > 0 and 0 < c.completion_tokens <= 6 for c in out)
    assert llm.usage.calls == 7


def test_sample_index_changes_the_seed_and_reruns_repeat(tiny_dir):
    llm = make_llm(cfg(tiny_dir, cache=False, seed=3))
    samples = [ChatRequest([{"role": "user", "content": "hi"}], temperature=1.0, max_tokens=8, sample_index=i)
               for i in range(2)]
    a, b = llm.complete(samples)
    again = llm.complete(samples)
    assert a.text != b.text
    assert [c.text for c in again] == [a.text, b.text]


def test_cached_rerun_never_loads_the_model(tiny_dir, tmp_path):
    first = make_llm(cfg(tiny_dir), tmp_path).complete(reqs(5))
    llm = make_llm(cfg(tiny_dir), tmp_path)
    second = llm.complete(reqs(5))
    assert llm._model is None  # everything came from the cache
    assert [c.text for c in second] == [c.text for c in first] and all(c.text for c in first)
    assert all(c.cached for c in second) and llm.usage.cached == 5


def test_passed_in_model_is_used_and_keyed_by_its_weights(tiny_dir, tmp_path):
    from lorapipe.models import load

    model, tok, _ = load(str(tiny_dir))
    llm = LocalLLM(LLMConfig(kind="local", max_tokens=6), tmp_path, model_and_tokenizer=(model, tok))
    out = llm.complete(reqs(2))
    assert all(c.text for c in out) and llm.complete(reqs(2))[0].cached
    ident = llm.identity()
    assert ident["kind"] == "local" and len(ident["weights_sha256"]) == 64
    # Changing one weight changes the identity, so answers of the old weights are not reused.
    import torch

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    changed = LocalLLM(LLMConfig(kind="local", max_tokens=6), tmp_path,
                       model_and_tokenizer=(model, tok))
    assert changed.identity()["weights_sha256"] != ident["weights_sha256"]
    assert not any(c.cached for c in changed.complete(reqs(2)))


def test_generation_failure_raises_or_becomes_error_completions(tiny_dir):
    from lorapipe.models import load

    model, tok, _ = load(str(tiny_dir))
    tok.chat_template = None  # apply_chat_template now fails inside generate()
    llm = LocalLLM(LLMConfig(kind="local", model="tiny", max_tokens=4, cache=False),
                   model_and_tokenizer=(model, tok))
    with pytest.raises(TeacherError, match=r"local model `tiny` failed on a batch of 2 request\(s\): ValueError: "
                                           r".*chat.template.*; lower `batch_size`"):
        llm.complete(reqs(2))
    out = llm.complete(reqs(2), raise_on_error=False)
    assert [c.text for c in out] == ["", ""] and all("failed on a batch" in c.error for c in out)
    assert llm.usage.failed == 2


@pytest.mark.slow
def test_default_model_is_the_embedded_smollm2():
    llm = make_llm(LLMConfig(kind="local", max_tokens=4, temperature=0.0, cache=False))
    assert llm.identity()["spec"] == "smollm2-135m-instruct"
    out = llm.complete([ChatRequest([{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0)])
    assert out[0].text.strip()
