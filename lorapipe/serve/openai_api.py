"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

The request's ``model`` picks the adapter (or the base model by its name). A request holds a lease
on the adapter version it started with until its last token; ``system_fingerprint`` names that
version (``name:version``), so a client can tell which one answered.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from lorapipe.serve.auth import Authenticated, Principal, check_model_access
from lorapipe.serve.engine import Engine, Job, Lease
from lorapipe.serve.schemas import ChatCompletionRequest, CompletionRequest, OpenAIError, _Body

router = APIRouter(tags=["openai"])


@dataclass
class _Run:
    """A submitted job whose scheduler-thread events are handed to the event loop.

    It also watches the connection: when the client goes away (a timeout, a cancelled call) the
    job is cancelled, so its rows leave the batch at the next step, streamed or not."""

    job: Job
    lease: Lease
    prompt_tokens: int
    started: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    texts: list[list[str]] = field(default_factory=list)
    finish: dict[int, str] = field(default_factory=dict)
    retry_after_s: int = 1
    _held: list[tuple[int, str, str | None]] = field(default_factory=list)
    _watcher: asyncio.Task | None = None

    def watch(self, request: Request) -> None:
        async def until_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.job.cancel()

        self._watcher = asyncio.get_running_loop().create_task(until_disconnect())

    def close(self) -> None:
        """Stop the job (a no-op once it finished) and the watch."""
        self.job.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def _check(self, delta: str, fin: str | None) -> None:
        if fin == "error":
            raise OpenAIError(500, f"generation failed: {delta}", type="server_error", code="generation_failed")
        if fin == "queue_timeout":
            raise OpenAIError(503, "the server is busy: this request could not start within serve.queue_timeout_s; "
                              f"retry in {self.retry_after_s} s or send fewer requests at once", type="server_error",
                              code="queue_timeout", headers={"Retry-After": str(self.retry_after_s)})

    async def admitted(self) -> None:
        """Wait until the first row leaves the queue (or ends: 503 when it timed out there)."""
        event = await self.queue.get()
        self._held.append(event)
        self._check(event[1], event[2])

    async def _next(self, wait_s: float | None) -> tuple[int, str, str | None] | None:
        if self._held:
            return self._held.pop()
        try:
            return await asyncio.wait_for(self.queue.get(), wait_s)
        except asyncio.TimeoutError:  # the event stays queued: get() takes it only once it completes
            return None

    async def events(self, idle_s: float | None = None) -> AsyncIterator[tuple[int, str, str | None] | None]:
        """The rows' events; ``None`` after ``idle_s`` seconds without one (the server is still at work)."""
        while len(self.finish) < len(self.job.rows):
            event = await self._next(idle_s)
            if event is None:
                yield None
                continue
            i, delta, fin = event
            self._check(delta, fin)
            self.texts[i].append(delta)
            if fin is not None:
                self.finish[i] = fin
            yield i, delta, fin

    @property
    def completion_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.job.rows)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


async def _encode(engine: Engine, chars: int, encode: Callable[[], list[int]], param: str) -> list[int]:
    """Tokenize off the event loop, after refusing a prompt that cannot fit by its length alone."""
    if chars > engine.max_prompt_chars:
        raise OpenAIError(400, f"the prompt has {chars} characters; this model's context of {engine.max_context} "
                          f"tokens holds at most {engine.max_prompt_chars}. Shorten the prompt", param=param,
                          code="context_length_exceeded")
    return await run_in_threadpool(encode)


async def _start(request: Request, body: _Body, prompt: list[int]) -> _Run:
    engine: Engine = request.app.state.engine
    budget = engine.max_context - len(prompt)
    if budget < 1:
        raise OpenAIError(400, f"the prompt has {len(prompt)} tokens; this model's context is "
                          f"{engine.max_context}. Shorten the prompt", param="messages", code="context_length_exceeded")
    wanted = body.requested_max_tokens or request.app.state.settings.default_max_tokens
    if wanted > budget:
        if body.requested_max_tokens:
            raise OpenAIError(400, f"max_tokens={wanted} plus the prompt's {len(prompt)} tokens exceeds the "
                              f"context of {engine.max_context}; ask for at most {budget}", param="max_tokens",
                              code="context_length_exceeded")
        wanted = budget
    request.state.model = body.model
    lease = await run_in_threadpool(engine.acquire, body.model)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def sink(i: int, delta: str, fin: str | None) -> None:  # runs on the scheduler thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (i, delta, fin))
        except RuntimeError:  # the event loop is gone (shutdown); nobody is listening any more
            pass

    try:
        job = engine.submit(lease, prompt, [body.sampling(wanted, i) for i in range(body.n)], sink)
    except BaseException:
        lease.release()
        raise
    run = _Run(job, lease, len(prompt), time.perf_counter(), queue, [[] for _ in range(body.n)],
               retry_after_s=engine.retry_after_s())
    run.watch(request)
    try:
        await run.admitted()  # headers (a stream's too) go out only once the request runs: a full queue is a 503
    except BaseException:
        run.close()
        raise
    return run


def _record(request: Request, run: _Run) -> None:
    m = request.app.state.engine.metrics
    m.prompt_tokens.labels(run.lease.model).inc(run.prompt_tokens)
    m.completion_tokens.labels(run.lease.model).inc(run.completion_tokens)


def _prepare(request: Request, body: _Body, who: Principal) -> Engine:
    body.refuse_unsupported()
    engine: Engine = request.app.state.engine
    check_model_access(who, body.model, engine.base_name)
    return engine


async def _finish(run: _Run) -> None:
    """Collect a non-streamed answer; the job stops if the client leaves meanwhile."""
    try:
        async for _ in run.events():
            pass
    finally:
        run.close()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           who: Authenticated) -> Any:
    """OpenAI chat completions, streamed as server-sent events when ``stream`` is true."""
    engine = _prepare(request, body, who)
    messages = [m.as_dict() for m in body.messages]

    def encode() -> list[int]:
        try:
            return engine.encode_chat(messages)
        except Exception as e:  # noqa: BLE001 - a template that rejects the roles' order, for example
            raise OpenAIError(400, f"cannot apply the chat template to these messages: {e}",
                              param="messages") from None

    prompt = await _encode(engine, sum(len(m["content"]) for m in messages), encode, "messages")
    run = await _start(request, body, prompt)
    ident = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return _sse(request, run, body, ident, "chat.completion.chunk", chat=True)
    await _finish(run)
    _record(request, run)
    choices = [{"index": i, "message": {"role": "assistant", "content": "".join(run.texts[i])},
                "finish_reason": run.finish[i], "logprobs": None} for i in range(body.n)]
    return JSONResponse({"id": ident, "object": "chat.completion", "created": int(time.time()),
                         "model": body.model, "system_fingerprint": run.lease.version, "choices": choices,
                         "usage": run.usage()})


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, who: Authenticated) -> Any:
    """OpenAI (legacy) text completions of a raw prompt, without the chat template."""
    engine = _prepare(request, body, who)
    prompt = await _encode(engine, len(body.text), lambda: engine.encode_text(body.text), "prompt")
    if not prompt:
        raise OpenAIError(400, "the prompt is empty", param="prompt")
    run = await _start(request, body, prompt)
    ident = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return _sse(request, run, body, ident, "text_completion", chat=False)
    await _finish(run)
    _record(request, run)
    choices = [{"index": i, "text": "".join(run.texts[i]), "finish_reason": run.finish[i], "logprobs": None}
               for i in range(body.n)]
    return JSONResponse({"id": ident, "object": "text_completion", "created": int(time.time()),
                         "model": body.model, "system_fingerprint": run.lease.version, "choices": choices,
                         "usage": run.usage()})


def _sse(request: Request, run: _Run, body: _Body, ident: str, obj: str, *, chat: bool) -> StreamingResponse:
    created = int(time.time())
    endpoint = "chat" if chat else "completions"
    ttft = request.app.state.engine.metrics.ttft.labels(endpoint)

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        data = {"id": ident, "object": obj, "created": created, "model": body.model,
                "system_fingerprint": run.lease.version, "choices": choices}
        if usage is not None or body.include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def choice(i: int, delta: str | None, fin: str | None) -> dict:
        if chat:
            d = {} if delta is None else {"content": delta}
            return {"index": i, "delta": d, "finish_reason": fin, "logprobs": None}
        return {"index": i, "text": delta or "", "finish_reason": fin, "logprobs": None}

    async def body_iter() -> AsyncIterator[str]:
        first = True
        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                              "logprobs": None} for i in range(body.n)])
            async for event in run.events(request.app.state.settings.keepalive_s):
                if event is None:  # a long prefill (or others' prefills): say so before the client gives up
                    yield ": keep-alive\n\n"
                    continue
                i, delta, fin = event
                if first and delta:
                    ttft.observe(time.perf_counter() - run.started)
                    first = False
                if delta:
                    yield chunk([choice(i, delta, None)])
                if fin is not None:
                    yield chunk([choice(i, None if chat else "", fin)])
            _record(request, run)
            if body.include_usage:
                yield chunk([], run.usage())
            yield "data: [DONE]\n\n"
        except OpenAIError as e:  # headers are sent already: report in the stream, as OpenAI does
            yield f"data: {json.dumps(e.body())}\n\ndata: [DONE]\n\n"
        finally:
            run.close()  # a no-op when it finished; else the client went away: free the batch rows

    return StreamingResponse(body_iter(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/models")
async def list_models(request: Request, who: Authenticated) -> Any:
    """The base model and every adapter the caller may use (``parent`` is the base)."""
    engine: Engine = request.app.state.engine
    names = await run_in_threadpool(engine.available)
    loaded = engine.loaded()
    created = request.app.state.started
    data = []
    if who.may_use(engine.base_name, engine.base_name):
        data.append({"id": engine.base_name, "object": "model", "created": created, "owned_by": "lorapipe",
                     "root": engine.base_name, "parent": None})
    for name in names:
        if who.may_use(name, engine.base_name):
            data.append({"id": name, "object": "model", "created": created, "owned_by": "lorapipe",
                         "root": name, "parent": engine.base_name, "loaded": name in loaded,
                         "version": loaded.get(name)})
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request, who: Authenticated) -> Any:
    """One model entry, or 404."""
    listing = await list_models(request, who)
    for entry in listing["data"]:
        if entry["id"] == model:
            return entry
    check_model_access(who, model, request.app.state.engine.base_name)
    raise OpenAIError(404, f"model `{model}` not found", param="model", code="model_not_found")
