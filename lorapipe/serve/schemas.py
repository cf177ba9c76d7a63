"""OpenAI request bodies the server accepts, and the error it answers with.

Unknown fields are ignored, as clients send many optional ones; fields that would change the answer
in a way this server cannot honour (tools, logprobs, echo...) are refused with a 400 naming them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lorapipe.decoding.batch import SamplingParams

MAX_N = 16
# OpenAI documents `seed` as a signed 64-bit integer; torch seeds take [-2**63, 2**64)
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class OpenAIError(Exception):
    """Answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 503

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)

    unsupported: ClassVar[tuple[str, ...]] = ()

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("give at most 4 non-empty stop strings")
        return stops

    def refuse_unsupported(self) -> None:
        for name in self.unsupported:
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, 0, [], {}):
                raise OpenAIError(400, f"`{name}` is not supported by this server; remove it from the request",
                                  param=name, code="unsupported_parameter")

    def sampling(self, max_tokens: int, choice: int) -> SamplingParams:
        """The parameters of choice number ``choice`` (each of the ``n`` choices gets seed + index)."""
        seed = None if self.seed is None else (self.seed + choice) % 2**64  # a valid torch seed, always
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                              stop=tuple(self.stop or ()), seed=seed, ignore_eos=self.ignore_eos)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, str]:
        if isinstance(self.content, list):
            parts = []
            for p in self.content:
                if p.get("type") != "text":
                    raise OpenAIError(400, f"content part of type {p.get('type')!r} is not supported; send text",
                                      param="messages", code="unsupported_content")
                parts.append(str(p.get("text", "")))
            text = "".join(parts)
        else:
            text = self.content or ""
        # the chat templates of small models know no `developer` role; it means `system`
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    unsupported = ("tools", "functions", "tool_choice", "logprobs", "top_logprobs", "logit_bias", "audio",
                    "prediction", "response_format")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Body):
    prompt: str | list[str]
    unsupported = ("echo", "suffix", "logprobs", "best_of", "logit_bias")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("send one prompt per request")
        return v

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens or 16  # OpenAI's default for /v1/completions


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Public adapter name, e.g. `contact`.")
    path: str = Field(description="PEFT adapter directory on the server's disk.")
