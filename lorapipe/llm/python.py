"""A teacher/judge that is a plain Python function, named ``module:function`` in the config.

The function is called once per request, in order, on the caller's thread (so it need not be
thread-safe)::

    def answer(messages: list[dict], *, temperature, top_p, max_tokens, stop, sample_index, seed, purpose,
               **_) -> str | dict

It returns the answer text, or a dict with ``text`` and optionally ``prompt_tokens`` and
``completion_tokens``. Accepting ``**_`` keeps a function working when parameters are added later.
``purpose`` says what a stage asks for, besides the prompt (the same prompt an LLM teacher gets):
``{"step": "edge_case", "category": "short"|"ambiguous"|"adversarial", "variant": "prompt_injection"|...,
"index": k}`` for an edge-case input (see ``lorapipe.data.prompts.EDGE_VARIANTS``),
``{"step": "paraphrase", "index": k, "input": text}`` for a paraphrase, ``None`` otherwise.
With ``cache: true`` (the default) answers are cached like an endpoint's, keyed also by the sha256
of the function's source file: editing the module asks again, and a rebuild (``lorapipe rebuild``)
replays the recorded answers without needing the files the function reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorapipe.codehash import code_sha256, import_fresh
from lorapipe.errors import ConfigError, TeacherError
from lorapipe.llm.base import ChatRequest, Completion, Progress, Usage
from lorapipe.llm.cache import ResponseCache, open_cache, request_key, split_cached


def load_function(spec: str, search_path: str | Path | None = None) -> Callable[..., Any]:
    """Import ``module:function``; a missing module or function is a ConfigError saying what to do."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"function `{spec}`: expected `module:function`, e.g. `my_teacher:answer`")
    mod_name, fn_name = spec.split(":")
    try:
        # A recipe keeps its teacher module next to pipeline.yaml; an edited file is re-imported.
        module = import_fresh(mod_name, search_path)
    except ModuleNotFoundError as e:
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise ConfigError(f"function `{spec}`: no module named `{mod_name}`; put {mod_name.split('.')[0]}.py "
                              "next to pipeline.yaml, on PYTHONPATH, or install its package") from None
        raise ConfigError(f"function `{spec}`: module `{mod_name}` imports `{e.name}`, which is not "
                          f"installed; pip install it") from None
    except Exception as e:  # noqa: BLE001 - a failing import of user code is a config problem
        raise ConfigError(f"function `{spec}`: importing `{mod_name}` failed with "
                          f"{type(e).__name__}: {e}; fix the module") from None
    fn = getattr(module, fn_name, None)
    if fn is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(f"function `{spec}`: module `{mod_name}` ({getattr(module, '__file__', '?')}) has no "
                          f"`{fn_name}`; callables it defines: {', '.join(public) or 'none'}")
    if not callable(fn):
        raise ConfigError(f"function `{spec}`: `{fn_name}` is a {type(fn).__name__}, not a function")
    return fn


class PythonLLM:
    """Client calling ``cfg.function`` (``cfg.kind == "python"``)."""

    def __init__(self, cfg: Any, cache_dir: str | Path | None = None, *, search_path: str | Path | None = None):
        if not cfg.function:
            raise ConfigError("a python teacher/judge needs `function: module:function`")
        self.cfg = cfg
        self.usage = Usage()
        self.fn = load_function(cfg.function, search_path)
        # The module and what it imports from its folder: editing either asks the function again.
        self.source_sha256 = code_sha256(cfg.function, Path(search_path) if search_path is not None else None)
        self.cache: ResponseCache | None = open_cache(cfg.cache, cache_dir)
        try:
            params = inspect.signature(self.fn).parameters.values()
            self._takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            self._accepts = {p.name for p in params}
        except (TypeError, ValueError):  # builtins and some C callables have no signature
            self._takes_any, self._accepts = True, set()

    def identity(self) -> dict[str, Any]:
        return {"kind": "python", "function": self.cfg.function, "source_sha256": self.source_sha256}

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params()
        params["seed"] = self.cfg.seed + request.sample_index
        params["purpose"] = request.purpose
        # A function declaring only some keywords gets only those (no TypeError on extras).
        return params if self._takes_any else {k: v for k, v in params.items() if k in self._accepts}

    def complete(self, requests: list[ChatRequest], progress: Progress | None = None, *,
                 raise_on_error: bool = True) -> list[Completion]:
        """Call the function once per request, in order (cached answers are not asked again)."""
        ident = self.identity()
        keys = [request_key(ident, req, self.cfg.seed + req.sample_index) if self.cache is not None
                else str(i) for i, req in enumerate(requests)]
        results, todo = split_cached(self.cache, keys, self.usage, self.cfg.prices, progress)
        for key, idxs in todo.items():
            req = requests[idxs[0]]
            comp = self._one(req, raise_on_error)
            if self.cache is not None:
                self.cache.put(key, comp, {"messages": req.messages, **req.params()})
            for i in idxs:
                results[i] = comp
                self.usage.add(comp, self.cfg.prices)
            if progress:
                progress(len(idxs))
        return results  # type: ignore[return-value]

    def _one(self, req: ChatRequest, raise_on_error: bool) -> Completion:
        spec = self.cfg.function
        try:
            result = self.fn([dict(m) for m in req.messages], **self._params(req))
            if isinstance(result, str):
                return Completion(text=result)
            if isinstance(result, dict) and isinstance(result.get("text"), str):
                return Completion(text=result["text"], prompt_tokens=int(result.get("prompt_tokens") or 0),
                                  completion_tokens=int(result.get("completion_tokens") or 0),
                                  finish_reason=result.get("finish_reason"))
            msg = (f"function `{spec}` returned {type(result).__name__} {str(result)[:100]!r}; it must return "
                   "a str or a dict with a str `text`")
        except Exception as e:  # noqa: BLE001 - any error in user code becomes a TeacherError
            msg = f"function `{spec}` raised {type(e).__name__}: {e}"
        if raise_on_error:
            raise TeacherError(msg)
        return Completion(text="", error=msg)
