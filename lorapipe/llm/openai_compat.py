"""A teacher/judge behind any OpenAI-compatible ``/chat/completions`` endpoint.

Requests run on a thread pool sharing one ``httpx.Client`` (keep-alive connections, one per worker).
Answers are *streamed* (``stream: true``), so ``timeout_s`` bounds the wait for the first byte and
the gap between two chunks, never the whole answer: a slow server that keeps producing tokens is
never given up on. An endpoint that answers plain JSON anyway, or refuses ``stream`` with a 400
(then the client stops asking), still works; ``stream: false`` in the config never asks.

How many requests are in flight adapts (:mod:`lorapipe.llm.congestion`): up to ``concurrency``,
halved on a timeout, 503, 504 or 429, climbing back as requests succeed, and each cut is logged, so
an overloaded local server gets fewer requests instead of the same number of retries. Each attempt
is also paced by a token bucket (``requests_per_second``). 408/409/425/429/5xx, timeouts, dropped
connections and 200s whose body is not a chat completion are retried up to ``max_retries`` times with
exponential backoff and full jitter, waiting at least what ``Retry-After`` asks for; other 4xx fail
at once (retrying cannot fix a bad key or URL). A request that fails for good raises
:class:`TeacherError` naming the endpoint, the last status and an excerpt of the body, or, with
``complete(..., raise_on_error=False)``, comes back as ``Completion(error=...)`` so a stage can
record it and carry on.

Every answer is committed to the disk cache the moment it arrives, from the worker thread, so a
``kill -9`` loses only the requests still in flight; a rerun sends only what is missing.
The API key is read from the environment variable named by ``api_key_env`` (never from YAML); with
no such variable set, no ``Authorization`` header is sent, which suits local servers.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
from typing_extensions import Self

from lorapipe.errors import ConfigError, TeacherError
from lorapipe.llm.base import ChatRequest, Completion, Progress, Usage
from lorapipe.llm.cache import ResponseCache, open_cache, request_key, split_cached
from lorapipe.llm.congestion import AdaptiveLimit

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
OVERLOAD_STATUS = frozenset({429, 503, 504})  # the endpoint has more than it can run: send fewer at once
_HINTS = {
    401: "set the environment variable named by `api_key_env` ({env}) to a valid API key",
    403: "the API key named by `api_key_env` ({env}) is not allowed to use this model",
    404: "check `base_url` (it usually ends in /v1) and `model`",
}


class TokenBucket:
    """Thread-safe pacing to at most ``rate`` requests per second (bursts of ``burst``)."""

    def __init__(self, rate: float, burst: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst, self._sleep = rate, burst, sleep
        self._tokens, self._last = burst, time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        # Reserve a token under the lock (the balance may go negative), then sleep outside it, so
        # waiting callers queue up in order without holding the lock.
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            delay = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if delay > 0:
            self._sleep(delay)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, *, overload: bool = False):
        super().__init__(reason)
        self.reason, self.retry_after, self.overload = reason, retry_after, overload


class _NoStream(Exception):
    """The endpoint refused ``stream``: send the same request without it."""


class _Cancelled(Exception):
    """The batch already failed; stop retrying quietly."""


class OpenAICompatLLM:
    """Client for an OpenAI-compatible endpoint (``cfg.kind == "openai"``).

    ``transport`` swaps httpx's network layer (tests); ``backoff_base_s``/``backoff_max_s`` shape
    the retry delays; ``sleep`` is how the client waits (tests record it).
    """

    def __init__(self, cfg: Any, cache_dir: str | Path | None = None, *,
                 transport: httpx.BaseTransport | None = None, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, max_retry_after_s: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep):
        if not cfg.base_url or not cfg.model:
            raise ConfigError("an openai teacher/judge needs `base_url` (e.g. http://localhost:8000/v1) "
                              "and `model`")
        self.cfg = cfg
        self.usage = Usage()
        self.base_url = cfg.base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            # pool=None: waiting for a free connection (calls from several threads) is not a timeout.
            headers=headers, transport=transport, timeout=httpx.Timeout(cfg.timeout_s, pool=None),
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency))
        self._bucket = TokenBucket(cfg.requests_per_second) if cfg.requests_per_second else None
        self.congestion = AdaptiveLimit(cfg.concurrency)
        self._stream = bool(getattr(cfg, "stream", True))
        self._lock = threading.Lock()
        self.cache: ResponseCache | None = open_cache(cfg.cache, cache_dir)

    # ------------------------------------------------------------------------------------ protocol
    def identity(self) -> dict[str, Any]:
        return {"kind": "openai", "base_url": self.base_url, "model": self.cfg.model}

    def seed_for(self, request: ChatRequest) -> int:
        """The seed sent with a request: deterministic per sample, distinct across samples."""
        return self.cfg.seed + request.sample_index

    def complete(self, requests: list[ChatRequest], progress: Progress | None = None, *,
                 raise_on_error: bool = True) -> list[Completion]:
        """Answer every request, in order: cache hits at once, the rest ``concurrency`` at a time.

        Identical requests (same key) in one call are sent once. With ``raise_on_error=False`` a
        request that fails for good yields ``Completion(text="", error=...)`` instead of raising.
        """
        ident = self.identity()
        keys = [request_key(ident, req, self.seed_for(req)) for req in requests]
        results, todo = split_cached(self.cache, keys, self.usage, self.cfg.prices, progress)
        if todo:
            cuts = self.congestion.cuts
            self._run(requests, todo, results, progress, raise_on_error)
            if self.congestion.cuts > cuts:
                log.warning("%s: the endpoint was overloaded %d time(s) in this batch of %d request(s); sending "
                            "%d at a time now (of concurrency %d)", self.url, self.congestion.cuts - cuts, len(todo),
                            int(self.congestion.limit), self.cfg.concurrency)
        return results  # type: ignore[return-value]

    def _run(self, requests: list[ChatRequest], todo: dict[str, list[int]], results: list[Completion | None],
             progress: Progress | None, raise_on_error: bool) -> None:
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(todo)),
                                  thread_name_prefix="lorapipe-llm")
        futures: dict[Future, str] = {
            pool.submit(self._call, requests[idxs[0]], key, raise_on_error, cancel): key
            for key, idxs in todo.items()}
        try:
            for fut in as_completed(futures):  # one waiter for all futures: O(n), unlike repeated wait()
                idxs = todo[futures[fut]]
                comp = fut.result()  # re-raises a TeacherError from the worker
                for n, i in enumerate(idxs):
                    # A duplicate of a request in the same call is answered from the first one.
                    results[i] = comp if n == 0 else dataclasses.replace(comp, cached=comp.error is None)
                    self.usage.add(results[i], self.cfg.prices)
                if progress:
                    progress(len(idxs))
        except BaseException:
            # Stop queued work and retry loops; requests in flight still finish and get cached.
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    # ------------------------------------------------------------------------------------ one request
    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        body: dict[str, Any] = {"model": self.cfg.model, "messages": request.messages,
                                "temperature": request.temperature, "top_p": request.top_p,
                                "max_tokens": request.max_tokens, "seed": self.seed_for(request)}
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter (uniform in [0, base * 2^attempt]) spreads retries of many workers apart.
        delay = random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    def _call(self, request: ChatRequest, key: str, raise_on_error: bool, cancel: threading.Event) -> Completion:
        body = self.body(request)
        attempts = self.cfg.max_retries + 1
        last, retry_after, hint = "", None, "check that the endpoint is up, or raise `max_retries`/`timeout_s`"
        attempt = 0
        while attempt < attempts:
            if cancel.is_set():
                raise _Cancelled()
            if attempt:
                self._sleep(self._backoff(attempt, retry_after))
            ticket = None if cancel.is_set() else self.congestion.acquire(cancel)
            if ticket is None:
                raise _Cancelled()
            try:
                if self._bucket is not None:
                    self._bucket.acquire()
                comp = self._attempt(body)
            except _NoStream:
                self.congestion.release(ticket, ok=False)
                continue  # the same attempt again, without `stream`
            except _Retry as r:
                cut = self.congestion.release(ticket, ok=False, congested=r.overload)
                if cut is not None:
                    log.warning("%s: %s; lowering concurrency %d -> %d and retrying", self.url, r.reason, *cut)
                last, retry_after = r.reason, r.retry_after
                attempt += 1
                log.debug("%s: attempt %d/%d failed: %s", self.url, attempt, attempts, last)
                continue
            except BaseException as e:
                self.congestion.release(ticket, ok=False)
                if not isinstance(e, TeacherError):
                    raise
                last, hint = str(e), ""  # not retryable
                attempts = attempt + 1
                break
            self.congestion.release(ticket)
            if self.cache is not None:
                self.cache.put(key, comp, request=body)
            return comp
        msg = (f"teacher/judge endpoint {self.url} (model `{self.cfg.model}`) failed after {attempts} "
               f"attempt(s); last error: {last}" + (f"; {hint}" if hint else ""))
        log.info("%s", msg)  # the caller raises or records it; no second copy on stderr
        if raise_on_error:
            raise TeacherError(msg)
        return Completion(text="", error=msg)

    def _attempt(self, body: dict[str, Any]) -> Completion:
        """One HTTP round trip: a Completion, or _Retry (worth retrying), _NoStream, or TeacherError (not)."""
        streamed = self._stream
        if streamed:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self._client.stream("POST", self.url, json=body) as resp:
                status = resp.status_code
                if status >= 400:
                    resp.read()
                    self._refused(status, resp, streamed)
                if "text/event-stream" in resp.headers.get("content-type", ""):
                    return _read_events(resp)
                resp.read()  # an endpoint that answers in one piece
                return _parse_completion(status, resp.text)
        except httpx.TimeoutException as e:
            raise _Retry(f"no data for {self.cfg.timeout_s:g} s ({type(e).__name__})", overload=True) from None
        except httpx.TransportError as e:
            raise _Retry(f"connection error ({type(e).__name__}: {e})") from None

    def _refused(self, status: int, resp: httpx.Response, streamed: bool) -> None:
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retry(f"HTTP {status}, body {_excerpt(resp.text)}",
                         parse_retry_after(resp.headers.get("retry-after")), overload=status in OVERLOAD_STATUS)
        if streamed and status in (400, 422) and "stream" in resp.text.lower():
            with self._lock:
                if self._stream:
                    self._stream = False
                    log.warning("%s does not stream (HTTP %d, body %s); sending whole-answer requests: "
                                "`timeout_s` now bounds each whole answer", self.url, status, _excerpt(resp.text))
            raise _NoStream()
        hint = _HINTS.get(status, "the endpoint rejected the request").format(env=self.cfg.api_key_env)
        raise TeacherError(f"HTTP {status}, body {_excerpt(resp.text)}; {hint}")

    def close(self) -> None:
        self._client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_completion(status: int, text: str) -> Completion:
    """A whole (non-streamed) chat completion body, or _Retry when it is not one."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not a string")
        usage = data.get("usage") or {}
        return Completion(text=content, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0),
                          finish_reason=choice.get("finish_reason"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise _Retry(f"HTTP {status} with a malformed body ({type(e).__name__}), body {_excerpt(text)}") from None


def _read_events(resp: httpx.Response) -> Completion:
    """Assemble choice 0 of a server-sent-events chat stream; _Retry when it breaks off or reports an error."""
    parts: list[str] = []
    finish, usage, done = None, {}, False
    for line in resp.iter_lines():  # to the end of the body, so the connection can serve the next request
        if done or not line.startswith("data:"):
            continue  # blank separators, `: keep-alive` comments, `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
            if event.get("error"):
                raise _Retry(f"the stream reported an error: {_excerpt(data)}")
            for choice in event.get("choices") or []:
                if choice.get("index", 0) == 0:
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str):
                        parts.append(delta["content"])
                    finish = choice.get("finish_reason") or finish
            usage = event.get("usage") or usage
        except (ValueError, TypeError, AttributeError) as e:
            raise _Retry(f"HTTP 200 stream with a malformed event ({type(e).__name__}): {_excerpt(data)}") from None
    if finish is None and not done:
        raise _Retry(f"the stream ended before the answer did, after {len(parts)} chunk(s)")
    return Completion(text="".join(parts), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0), finish_reason=finish)
