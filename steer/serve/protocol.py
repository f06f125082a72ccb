"""The OpenAI request and response shapes of ``/v1/chat/completions`` and ``/v1/completions``,
with one extra request field, ``steer`` (:class:`~steer.serve.steering.RequestSteering`).

Requests are validated strictly, as recipes are: an unknown key or a wrong type is a 400 that
names the field (``steer.interventions[0].features[1]: ...``). Sampling settings a request
leaves out come from the served recipe's ``generation`` block. Settings steer cannot honour
(penalties, logit bias, tools) are refused by name rather than silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steer.errors import SteerError
from steer.schema import first_error
from steer.serve.steering import RequestSteering


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _Common(_Strict):
    """Fields both endpoints take."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0, description="No end-of-sequence before this many (vLLM's).")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted at their neutral values only (clients send them by default).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    steer: RequestSteering | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("penalties are not supported (only 0)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict | None) -> dict | None:
        if value:
            raise ValueError("logit_bias is not supported (steer edits SAE features instead)")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatRequest(_Common):
    """A ``/v1/chat/completions`` body."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict | None) -> dict | None:
        if value is not None and value != {"type": "text"}:
            raise ValueError('only {"type": "text"} is supported')
        return value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprob_request(self) -> tuple[bool, int]:
        """Whether to return log-probabilities, and how many alternatives per token."""
        if self.top_logprobs and not self.logprobs:
            raise SteerError("top_logprobs needs logprobs: true", where="top_logprobs")
        return self.logprobs, self.top_logprobs or 0


class CompletionRequest(_Common):
    """A ``/v1/completions`` body."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("must not be empty")
        if any(not p for p in ([value] if isinstance(value, str) else value)):
            raise ValueError("a prompt must not be empty")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def token_limit(self) -> int | None:
        return self.max_tokens

    def logprob_request(self) -> tuple[bool, int]:
        """Whether to return log-probabilities, and how many alternatives per token."""
        return self.logprobs is not None, self.logprobs or 0


def parse_request(schema: type[_Common], data: Any) -> Any:
    """``data`` (parsed JSON) as a request of ``schema``; a problem is a one-line
    :class:`SteerError` naming the field."""
    if not isinstance(data, dict):
        raise SteerError(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        where, message = first_error(exc)
        raise SteerError(message, where=where) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(kind: str, rid: str, model: str, choices: list, **extra: Any) -> dict[str, Any]:
    """The fields every response and chunk carries."""
    return {
        "id": rid,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-style logprob entries in the legacy ``/v1/completions`` shape."""
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [_by_text(e["top_logprobs"]) for e in entries],
        "text_offset": offsets,
    }


def _by_text(top: list[dict[str, Any]]) -> dict[str, float]:
    """Alternatives keyed by their text; where two tokens share a text (byte pieces of one
    character), the likelier one (they come most likely first)."""
    found: dict[str, float] = {}
    for item in top:
        found.setdefault(item["token"], item["logprob"])
    return found


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None):
    """The OpenAI error shape (the official client reads ``error.message``)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
