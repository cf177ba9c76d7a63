"""A teacher/judge that is an in-process transformers model, answering in batches.

Requests that share sampling settings (temperature, top_p, max_tokens, stop, sample_index) are
generated together by :func:`lorapipe.generation.generate`, ``cfg.batch_size`` at a time, seeded
with ``cfg.seed + sample_index`` so N samples of a prompt differ and a rerun repeats them. The model
is loaded on first use, so a fully cached rerun never loads it. Answers go to the same disk cache as
the endpoint client, keyed by the model's weight hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from lorapipe.errors import TeacherError
from lorapipe.llm.base import ChatRequest, Completion, Progress, Usage
from lorapipe.llm.cache import ResponseCache, open_cache, request_key, split_cached

DEFAULT_MODEL = "smollm2-135m-instruct"


def state_dict_sha256(model: Any) -> str:
    """sha256 over a model's parameter and buffer names and bytes (identity of an in-memory model)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class LocalLLM:
    """Client running ``cfg.model`` (default ``smollm2-135m-instruct``) in-process (``cfg.kind == "local"``).

    Pass ``model_and_tokenizer`` to reuse an already loaded model instead of loading ``cfg.model``.
    """

    def __init__(self, cfg: Any, cache_dir: str | Path | None = None,
                 model_and_tokenizer: tuple[Any, Any] | None = None, *, device: str | None = None):
        self.cfg = cfg
        self.usage = Usage()
        self.spec = cfg.model or DEFAULT_MODEL
        self.device = device
        self._model, self._tokenizer = model_and_tokenizer or (None, None)
        self._info = None
        self._ident: dict[str, Any] | None = None
        if model_and_tokenizer is None:
            from lorapipe.models import resolve

            self._info = resolve(self.spec)  # fails early (ModelError) on a bad spec; cheap once converted
        self.cache: ResponseCache | None = open_cache(cfg.cache, cache_dir)

    def identity(self) -> dict[str, Any]:
        if self._ident is None:
            if self._info is not None:
                self._ident = {"kind": "local", **self._info.identity()}
            else:  # an in-memory model: its weights are its identity
                name = self.cfg.model or getattr(self._model, "name_or_path", None)
                self._ident = {"kind": "local", "spec": name, "weights_sha256": state_dict_sha256(self._model)}
        return self._ident

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from lorapipe.models import load_model, load_tokenizer

            self._model = load_model(self._info, device=self.device)
            self._tokenizer = load_tokenizer(self._info)
        return self._model, self._tokenizer

    def complete(self, requests: list[ChatRequest], progress: Progress | None = None, *,
                 raise_on_error: bool = True) -> list[Completion]:
        """Answer every request, in order: cache hits at once, the rest in batches of ``batch_size``.

        A batch whose generation fails raises :class:`TeacherError`, or with ``raise_on_error=False``
        yields ``Completion(error=...)`` for its requests.
        """
        keys = [request_key(self.identity(), req, self.cfg.seed + req.sample_index) if self.cache is not None
                else str(i) for i, req in enumerate(requests)]
        results, todo = split_cached(self.cache, keys, self.usage, self.cfg.prices, progress)
        # One generate() call per group of requests that share sampling settings.
        groups: dict[tuple, list[str]] = {}
        for key, idxs in todo.items():
            r = requests[idxs[0]]
            groups.setdefault((r.temperature, r.top_p, r.max_tokens, r.stop, r.sample_index), []).append(key)
        for (temperature, top_p, max_tokens, stop, sample_index), keys in groups.items():
            self._generate_group(requests, todo, keys, results, progress, raise_on_error, temperature=temperature,
                                 top_p=top_p, max_tokens=max_tokens, stop=list(stop),
                                 seed=self.cfg.seed + sample_index)
        return results  # type: ignore[return-value]

    def _generate_group(self, requests: list[ChatRequest], todo: dict[str, list[int]], keys: list[str],
                        results: list[Completion | None], progress: Progress | None, raise_on_error: bool, *,
                        temperature: float, top_p: float, max_tokens: int, stop: list[str], seed: int) -> None:
        from lorapipe.generation import generate

        model, tokenizer = self._load()
        bs = self.cfg.batch_size
        # Generate a batch_size slice at a time so every answer is cached as soon as its batch ends.
        for start in range(0, len(keys), bs):
            chunk = keys[start:start + bs]
            try:
                gens = generate(model, tokenizer, [requests[todo[k][0]].messages for k in chunk],
                                max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, batch_size=bs,
                                seed=seed + start, stop=stop)
                comps = [Completion(text=g.text, prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
                                    finish_reason="length" if g.completion_tokens >= max_tokens else "stop")
                         for g in gens]
            except (RuntimeError, ValueError, IndexError) as e:  # OOM, bad template, too long a prompt...
                msg = (f"local model `{self.spec}` failed on a batch of {len(chunk)} request(s): "
                       f"{type(e).__name__}: {str(e)[:300]}; lower `batch_size`/`max_tokens` or shorten the prompts")
                if raise_on_error:
                    raise TeacherError(msg) from e
                comps = [Completion(text="", error=msg) for _ in chunk]
            for key, comp in zip(chunk, comps):
                if self.cache is not None:
                    self.cache.put(key, comp, request={"messages": requests[todo[key][0]].messages,
                                                       **requests[todo[key][0]].params()})
                for n, i in enumerate(todo[key]):
                    # A duplicate of a request in the same call is answered from the first one.
                    results[i] = comp if n == 0 else dataclasses.replace(comp, cached=comp.error is None)
                    self.usage.add(results[i], self.cfg.prices)
            if progress:
                progress(sum(len(todo[k]) for k in chunk))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
