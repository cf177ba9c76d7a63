"""PythonLLM: a `module:function` teacher, and the errors that name the spec and the fix."""

from __future__ import annotations

import textwrap
import uuid

import pytest

from lorapipe.config import LLMConfig
from lorapipe.errors import ConfigError, TeacherError
from lorapipe.llm import ChatRequest, PythonLLM, make_llm

MODULE = """
def answer(messages, **params):
    return f"{messages[-1]['content']}|t={params['temperature']}|s={params['seed']}|i={params['sample_index']}"

def as_dict(messages, **params):
    return {"text": messages[-1]["content"][::-1], "prompt_tokens": 3, "completion_tokens": 2}

def few_params(messages, temperature):
    return f"only t={temperature}"

def bad_type(messages, **params):
    return 42

def boom(messages, **params):
    raise RuntimeError("the teacher function broke")

NOT_CALLABLE = 3
"""


@pytest.fixture
def module(tmp_path):
    """A uniquely named module in tmp_path (unique so sys.modules never serves a stale one)."""
    name = f"lp_teacher_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    return name, tmp_path


def make(module, fn: str, **kw) -> PythonLLM:
    name, path = module
    return PythonLLM(LLMConfig(kind="python", function=f"{name}:{fn}", **kw), search_path=path)


def test_function_gets_messages_and_sampling_params(module):
    llm = make(module, "answer", seed=10)
    reqs = [ChatRequest([{"role": "user", "content": "q"}], temperature=0.2, sample_index=i) for i in range(2)]
    out = llm.complete(reqs)
    assert [c.text for c in out] == ["q|t=0.2|s=10|i=0", "q|t=0.2|s=11|i=1"]
    assert llm.usage.calls == 2
    ident = llm.identity()
    assert ident["kind"] == "python" and ident["function"] == f"{module[0]}:answer"
    assert len(ident["source_sha256"]) == 64  # a changed module is another teacher (and another cache key)


def test_dict_results_carry_token_counts(module):
    llm = make(module, "as_dict", prices={"input_per_1k": 1000.0})
    out = llm.complete([ChatRequest([{"role": "user", "content": "abc"}])])
    assert (out[0].text, out[0].prompt_tokens, out[0].completion_tokens) == ("cba", 3, 2)
    assert llm.usage.cost == pytest.approx(3.0)


def test_functions_declaring_fewer_params_get_only_those(module):
    out = make(module, "few_params").complete([ChatRequest([{"role": "user", "content": "q"}], temperature=0.3)])
    assert out[0].text == "only t=0.3"


@pytest.mark.parametrize("fn, expected", [
    ("bad_type", r"`lp_teacher_\w+:bad_type` returned int '42'; it must return a str or a dict with a str `text`"),
    ("boom", r"`lp_teacher_\w+:boom` raised RuntimeError: the teacher function broke"),
])
def test_failures_raise_or_become_error_completions(module, fn, expected):
    llm = make(module, fn)
    reqs = [ChatRequest([{"role": "user", "content": "q"}])]
    with pytest.raises(TeacherError, match=expected):
        llm.complete(reqs)
    out = llm.complete(reqs, raise_on_error=False)
    assert out[0].text == "" and out[0].error and llm.usage.failed == 1


@pytest.mark.parametrize("spec, expected", [
    ("lp_no_such_module_xyz:f", (r"function `lp_no_such_module_xyz:f`: no module named `lp_no_such_module_xyz`; "
                                 r"put lp_no_such_module_xyz.py next to pipeline.yaml, on PYTHONPATH")),
    ("{mod}:missing", (r"function `lp_teacher_\w+:missing`: module `lp_teacher_\w+` \(.*\.py\) has no `missing`; "
                       r"callables it defines: answer, as_dict, bad_type, boom, few_params")),
    ("{mod}:NOT_CALLABLE", r"`NOT_CALLABLE` is a int, not a function"),
    ("json:nope", r"module `json` \(.*\) has no `nope`"),
])
def test_bad_specs_are_config_errors_naming_the_spec_and_fix(module, spec, expected):
    with pytest.raises(ConfigError, match=expected):
        make_llm(LLMConfig(kind="python", function=spec.format(mod=module[0])), search_path=module[1])


def test_module_with_a_missing_dependency_says_what_to_install(tmp_path):
    name = f"lp_teacher_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import lp_not_installed_pkg\n\ndef f(messages, **kw):\n    return ''\n")
    with pytest.raises(ConfigError, match=rf"module `{name}` imports `lp_not_installed_pkg`, which is not "
                                          r"installed; pip install it"):
        make_llm(LLMConfig(kind="python", function=f"{name}:f"), search_path=tmp_path)


def test_answers_are_cached_and_a_changed_module_asks_again(tmp_path):
    """With a cache directory, a rerun replays the recorded answers; editing the module invalidates them."""
    name = f"lp_counting_{uuid.uuid4().hex[:8]}"
    src = tmp_path / f"{name}.py"
    calls = tmp_path / "calls.txt"  # counted on disk: each client imports the module afresh
    src.write_text(f"def answer(messages, **p):\n    open({str(calls)!r}, 'a').write('1')\n"
                   "    return 'v1:' + messages[-1]['content']\n")
    cfg = LLMConfig(kind="python", function=f"{name}:answer")
    reqs = [ChatRequest(messages=[{"role": "user", "content": c}]) for c in ("a", "b", "a")]
    first = make_llm(cfg, cache_dir=tmp_path / "cache", search_path=tmp_path)
    assert [c.text for c in first.complete(reqs)] == ["v1:a", "v1:b", "v1:a"]
    assert calls.read_text() == "11"  # the repeated request is asked once
    again = make_llm(cfg, cache_dir=tmp_path / "cache", search_path=tmp_path)
    comps = again.complete(reqs)
    assert [c.text for c in comps] == ["v1:a", "v1:b", "v1:a"] and all(c.cached for c in comps)
    assert calls.read_text() == "11" and again.usage.calls == 0 and again.usage.cached == 3
    # the same function, edited: its source hash is part of the key
    src.write_text(src.read_text().replace("'v1:'", "'v2:'"))
    edited = make_llm(cfg, cache_dir=tmp_path / "cache", search_path=tmp_path)
    assert [c.text for c in edited.complete(reqs)] == ["v2:a", "v2:b", "v2:a"]
    assert edited.usage.calls == 3 and edited.usage.cached == 0


def test_the_purpose_reaches_the_function_but_not_the_cache_key(tmp_path):
    from lorapipe.llm.cache import request_key

    (tmp_path / "purpose_fn.py").write_text("def answer(messages, purpose=None, **_):\n    return repr(purpose)\n")
    llm = PythonLLM(LLMConfig(kind="python", function="purpose_fn:answer", cache=False), search_path=tmp_path)
    asked = ChatRequest([{"role": "user", "content": "q"}], purpose={"step": "edge_case", "index": 2})
    plain = ChatRequest([{"role": "user", "content": "q"}])
    assert [c.text for c in llm.complete([asked, plain])] == ["{'step': 'edge_case', 'index': 2}", "None"]
    assert asked == plain and request_key({"k": 1}, asked) == request_key({"k": 1}, plain)  # derived from the prompt
