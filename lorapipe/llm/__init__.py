"""Teachers and judges: one protocol (:class:`LLM`), three kinds (openai, local, python).

Build one with :func:`make_llm` from an ``LLMConfig``; stages receive the built client and only
call ``complete(requests, progress)`` and ``identity()``::

    llm = make_llm(cfg.teacher, cache_dir=run_dir / "cache")
    answers = llm.complete([ChatRequest.from_config(cfg.teacher, msgs, sample_index=i) for ...])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorapipe.errors import ConfigError
from lorapipe.llm.base import LLM, ChatRequest, Completion, Messages, Progress, Usage
from lorapipe.llm.cache import ResponseCache, request_key

__all__ = ["LLM", "ChatRequest", "Completion", "LocalLLM", "Messages", "OpenAICompatLLM", "Progress",
           "PythonLLM", "ResponseCache", "Usage", "make_llm", "request_key"]


def make_llm(cfg: Any, cache_dir: str | Path | None = None, **kw: Any) -> LLM:
    """The client for ``cfg.kind``; ``cache_dir`` holds the answer cache (None: no cache).

    Extra keywords go to the client's constructor (e.g. ``model_and_tokenizer=`` for local,
    ``search_path=`` for python, ``transport=`` for openai).
    """
    if cfg.kind == "openai":
        from lorapipe.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(cfg, cache_dir, **kw)
    if cfg.kind == "local":
        from lorapipe.llm.local import LocalLLM

        return LocalLLM(cfg, cache_dir, **kw)
    if cfg.kind == "python":
        from lorapipe.llm.python import PythonLLM

        return PythonLLM(cfg, cache_dir, **kw)
    raise ConfigError(f"unknown teacher/judge kind `{cfg.kind}`; use openai, local or python")


def __getattr__(name: str) -> Any:
    # The client classes load lazily so `import lorapipe.llm` stays cheap (no httpx/torch until used).
    if name == "OpenAICompatLLM":
        from lorapipe.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM
    if name == "LocalLLM":
        from lorapipe.llm.local import LocalLLM

        return LocalLLM
    if name == "PythonLLM":
        from lorapipe.llm.python import PythonLLM

        return PythonLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
