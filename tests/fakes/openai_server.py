"""A real OpenAI-compatible HTTP server for tests: scripted answers, latency, injected faults, a log.

It listens on 127.0.0.1 (a free port by default) in a background thread, speaks HTTP/1.1 with
keep-alive, and implements::

    POST /v1/chat/completions   (JSON, or SSE chunks when the body has "stream": true)
    GET  /v1/models

Typical use::

    with FakeOpenAI(responder=lambda body: body["messages"][-1]["content"].upper(),
                    latency_s=0.05, fault_rate=0.3, seed=1) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="x")     # or any other client
        ...
        assert srv.count("ok") == 10 and srv.max_in_flight > 1

Answers (``responder``):
  * a callable ``responder(body) -> str | dict`` (``dict``: ``text`` plus optional
    ``finish_reason``, ``prompt_tokens``, ``completion_tokens``); an exception it raises becomes a
    500 whose body names it;
  * a list/iterable of strings, served in arrival order (a 500 once exhausted);
  * a plain string, always the same;
  * ``None`` (default): :func:`echo`, i.e. ``"echo: <last user message>"``.

Faults (decided per request, in this order; each is one of :data:`FAULTS`):
  1. ``fault_fn(body, n) -> str | None`` — full control (``n`` counts requests from 0);
  2. ``faults``: a script consumed one entry per request (``None`` or ``"ok"`` = answer normally);
  3. ``fault_rate``: that fraction of requests gets a fault drawn from ``fault_kinds``, using a
     ``random.Random(seed)`` so a run is reproducible.

  ``"429"`` sends ``Retry-After: retry_after_s`` (omitted when ``retry_after_s is None``);
  ``"500"``/``"503"`` are errors with a JSON error body; ``"timeout"`` sleeps ``timeout_sleep_s``
  (set it past the client's timeout) before answering; ``"malformed"`` is a 200 whose body is not
  JSON; ``"truncated"`` is a 200 JSON object without ``choices``; ``"drop"`` closes the connection
  without a response.

Latency: ``latency_s`` (a number, or ``latency_s(body) -> float``) is slept before answering. A slow
generator: ``chunk_delay_s`` is slept before each word of a streamed answer, and a non-streamed
answer waits for all of them before it is sent (as a real server computes it first). Sleeps end
early when the server stops, so a test never waits on a hung handler.

Streaming (``stream_mode``): ``"sse"`` (default) streams when asked, with a usage chunk when
``stream_options.include_usage`` is set; ``"ignore"`` answers plain JSON whatever the request says;
``"reject"`` answers 400 to a request that asks to stream, as some endpoints do.

Log: ``srv.log`` is a snapshot list of :class:`LogEntry` (body, outcome, status, arrival and end
times, the Authorization header, the answer), appended when a request *arrives* (outcome
``"pending"`` until it ends), so a test can see what is in flight. An outcome is logged before the
answer's last bytes go out, so a client that has read its answer finds it in the log. ``srv.count(outcome)``,
``srv.answered(content)`` and ``srv.max_in_flight`` summarise it.

Auth: with ``api_key`` set, requests without ``Authorization: Bearer <api_key>`` get a 401.

Run it standalone (e.g. for a server in another process)::

    python -m tests.fakes --latency 0.05 --fault-rate 0.1
    # prints: base_url=http://127.0.0.1:PORT/v1   then serves until killed
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self

FAULTS = ("429", "500", "503", "timeout", "malformed", "truncated", "drop")
DEFAULT_FAULT_KINDS = ("429", "500", "503", "malformed", "drop")

Responder = Callable[[dict[str, Any]], "str | dict[str, Any]"]


def echo(body: dict[str, Any]) -> str:
    """The default answer: ``echo: `` plus the last user message."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


@dataclass
class LogEntry:
    n: int  # arrival order, from 0
    body: dict[str, Any] | None  # None when the body was not JSON
    path: str
    outcome: str = "pending"  # ok | one of FAULTS | bad_request | unauthorized | error | client_gone | pending
    status: int | None = None  # None for "drop" (and while pending)
    t_start: float = 0.0  # time.monotonic() at arrival
    t_end: float | None = None
    authorization: str | None = None
    answer: str | None = None

    @property
    def last_user(self) -> str | None:
        """The last user message of the request (what most tests key on)."""
        users = [m.get("content") for m in (self.body or {}).get("messages", []) if m.get("role") == "user"]
        return users[-1] if users else None


class _Dropped(Exception):
    """Raised inside a handler to close the connection without a response."""


class FakeOpenAI:
    """A loopback OpenAI-compatible server; use as a context manager (or call start/stop)."""

    def __init__(self, responder: Responder | Iterable[str] | str | None = None, *, latency_s: float |
                 Callable[[dict[str, Any]], float] = 0.0, fault_rate: float = 0.0,
                 fault_kinds: Iterable[str] = DEFAULT_FAULT_KINDS, faults: Iterable[str | None] = (),
                 fault_fn: Callable[[dict[str, Any], int], str | None] | None = None,
                 retry_after_s: float | None = 0, timeout_sleep_s: float = 5.0, seed: int = 0,
                 models: Iterable[str] = ("fake-model",), api_key: str | None = None,
                 chunk_delay_s: float = 0.0, stream_mode: str = "sse", host: str = "127.0.0.1", port: int = 0):
        self.fault_kinds = tuple(fault_kinds)
        for f in (*self.fault_kinds, *(f for f in faults if f not in (None, "ok"))):
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; choose from {', '.join(FAULTS)}")
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        if callable(responder):
            self._responder: Responder = responder
        elif isinstance(responder, str):
            text = responder
            self._responder = lambda body: text
        elif responder is None:
            self._responder = echo
        else:
            self._queue = deque(responder)
            self._responder = self._from_queue
        if stream_mode not in ("sse", "ignore", "reject"):
            raise ValueError(f"stream_mode must be sse, ignore or reject, got {stream_mode!r}")
        self.chunk_delay_s, self.stream_mode = chunk_delay_s, stream_mode
        self.latency_s, self.fault_rate, self.fault_fn = latency_s, fault_rate, fault_fn
        self.retry_after_s, self.timeout_sleep_s = retry_after_s, timeout_sleep_s
        self.models, self.api_key = list(models), api_key
        self._script = deque(faults)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._log: list[LogEntry] = []
        self._counter = itertools.count()
        self._in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What a client's ``base_url`` should be: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._server.server_address[0]}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes sleeping handlers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ the log
    @property
    def log(self) -> list[LogEntry]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return [replace(e) for e in self._log]

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until no request is pending (e.g. those whose clients gave up without an answer)."""
        deadline = time.monotonic() + timeout_s
        while any(e.outcome == "pending" for e in self.log) and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (the one calling ``fault_fn`` included)."""
        with self._lock:
            return self._in_flight

    def count(self, outcome: str | None = None) -> int:
        """Requests so far (with that outcome, e.g. ``"ok"``, ``"429"``, ``"pending"``)."""
        return sum(1 for e in self.log if outcome is None or e.outcome == outcome)

    def answered(self, content: str) -> int:
        """How many times a request whose last user message is ``content`` was answered (200 OK)."""
        return sum(1 for e in self.log if e.outcome == "ok" and e.last_user == content)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.max_in_flight = 0

    # ------------------------------------------------------------------------------ internals
    def _from_queue(self, body: dict[str, Any]) -> str:
        with self._lock:
            if not self._queue:
                raise LookupError("the scripted answer queue is empty")
            return self._queue.popleft()

    def _begin(self, body: dict[str, Any] | None, path: str, auth: str | None) -> LogEntry:
        with self._lock:
            e = LogEntry(next(self._counter), body, path, t_start=time.monotonic(), authorization=auth)
            self._log.append(e)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return e

    def _end(self, e: LogEntry, outcome: str, status: int | None, answer: str | None = None) -> None:
        """Record how a request ended; a later call corrects it (the answer was recorded before its
        last bytes went out, and then the client turned out to be gone)."""
        with self._lock:
            if e.t_end is None:
                self._in_flight -= 1
            e.outcome, e.status, e.answer, e.t_end = outcome, status, answer, time.monotonic()

    def _choose_fault(self, body: dict[str, Any], n: int) -> str | None:
        if self.fault_fn is not None:
            f = self.fault_fn(body, n)
            if f not in (None, "ok"):
                if f not in FAULTS:
                    raise ValueError(f"fault_fn returned unknown fault {f!r}")
                return f
        with self._lock:
            if self._script:
                f = self._script.popleft()
                return None if f in (None, "ok") else f
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
            "total_tokens": prompt + len(text.split())}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real endpoints
    disable_nagle_algorithm = True  # else headers and body, written apart, wait ~40 ms on delayed ACKs
    server: _Server
    _entry: LogEntry | None = None  # the request being answered, until its outcome is logged
    _outcome: tuple[str, int | None, str | None] = ("pending", None, None)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read srv.log instead
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._record()
        self.wfile.write(raw)

    def _record(self) -> None:
        """Log the outcome before the last bytes go out, so a client that has read its answer always
        finds the request ended in ``srv.log`` (no race with this thread)."""
        entry, self._entry = self._entry, None
        if entry is not None:
            self.server.fake._end(entry, *self._outcome)

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.server.fake.models]
            self._send(200, {"object": "list", "data": data})
        else:
            self._error(404, f"no route GET {self.path}", "not_found")

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        entry = self._entry = fake._begin(body, self.path, self.headers.get("Authorization"))
        try:
            self._serve(fake, body, entry.n)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. timed out)
            self._entry, self._outcome = entry, ("client_gone", None, None)  # corrects a recorded "ok"
        except _Dropped:
            self._outcome = ("drop", None, None)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._record()  # when nothing was sent (a drop), or to correct it (the client was gone)

    def _serve(self, fake: FakeOpenAI, body: dict[str, Any] | None, n: int) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._outcome = ("bad_request", 404, None)
            self._error(404, f"no route POST {self.path}", "not_found")
            return
        if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._outcome = ("unauthorized", 401, None)
            self._error(401, "Incorrect API key provided", "invalid_request_error")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            self._outcome = ("bad_request", 400, None)
            self._error(400, "the body must be JSON with `model` and a `messages` list", "invalid_request_error")
            return
        if body.get("stream") and fake.stream_mode == "reject":
            self._outcome = ("bad_request", 400, None)
            self._error(400, "`stream` is not supported by this endpoint", "invalid_request_error")
            return
        latency = fake.latency_s(body) if callable(fake.latency_s) else fake.latency_s
        fake._sleep(latency)
        fault = fake._choose_fault(body, n)
        if fault == "drop":
            raise _Dropped()
        if fault == "429":
            headers = {} if fake.retry_after_s is None else {"Retry-After": f"{fake.retry_after_s:g}"}
            self._outcome = ("429", 429, None)
            self._error(429, "Rate limit reached (injected)", "rate_limit_error", headers)
            return
        if fault in ("500", "503"):
            self._outcome = (fault, int(fault), None)
            self._error(int(fault), f"injected {fault}", "server_error")
            return
        if fault == "malformed":
            self._outcome = ("malformed", 200, None)
            self._send(200, b'{"id": "chatcmpl-broken", "choices": [{"mess', content_type="application/json")
            return
        if fault == "truncated":
            self._outcome = ("truncated", 200, None)
            self._send(200, {"id": "chatcmpl-truncated", "object": "chat.completion"})
            return
        if fault == "timeout":
            fake._sleep(fake.timeout_sleep_s)
        try:
            out = fake._responder(body)
        except Exception as e:  # noqa: BLE001 - a responder bug must show, not hang the client
            self._outcome = ("error", 500, None)
            self._error(500, f"responder raised {type(e).__name__}: {e}", "server_error")
            return
        out = out if isinstance(out, dict) else {"text": out}
        text = str(out["text"])
        usage = _usage(body, text)
        for k in ("prompt_tokens", "completion_tokens"):
            if k in out:
                usage[k] = int(out[k])
        finish = out.get("finish_reason", "stop")
        self._outcome = ("timeout" if fault == "timeout" else "ok"), 200, text
        if body.get("stream") and fake.stream_mode == "sse":
            self._stream(body, text, finish, n, usage)
        else:
            fake._sleep(fake.chunk_delay_s * len(_split_keep(text)))
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                       for i in range(int(body.get("n") or 1))]
            self._send(200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                             "model": body["model"], "choices": choices, "usage": usage})

    def _stream(self, body: dict[str, Any], text: str, finish: str, n: int, usage: dict[str, int]) -> None:
        """Server-sent events in HTTP/1.1 chunks, so the connection stays open for the next request."""
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}

        out: list[bytes] = []

        def event(data: Any) -> None:
            out.append(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode())

        def flush() -> None:  # the events so far as one HTTP chunk (a fast server's tokens come together)
            raw = b"".join(out)
            out.clear()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))

        pieces = [{"role": "assistant", "content": ""}] + [{"content": w} for w in _split_keep(text)]
        for k, delta in enumerate(pieces):
            if k and fake.chunk_delay_s:  # a slow generator: each piece goes out on its own, then a pause
                flush()
                fake._sleep(fake.chunk_delay_s)
            event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            event({**base, "choices": [], "usage": usage})
        event("[DONE]")
        self._record()
        flush()
        self.wfile.write(b"0\r\n\r\n")


def _split_keep(text: str) -> list[str]:
    """Split into word-ish pieces that concatenate back to ``text`` exactly."""
    parts, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            parts.append(cur)
            cur = ""
    return parts + ([cur] if cur else [])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible endpoint until killed.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="Seconds slept before each answer.")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    with FakeOpenAI(latency_s=a.latency, fault_rate=a.fault_rate, seed=a.seed, port=a.port) as srv:
        print(f"base_url={srv.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
