"""Engine updates as OpenAI responses: server-sent-event chunks as they come, or one JSON
body when every choice has finished. Monitor events ride along in a ``steer`` field (each
names its choice ``index``), on the chunk of the step that produced them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from steer.serve.jobs import ERROR, Update
from steer.serve.protocol import completion_logprobs, envelope, error_body, usage


@dataclass
class Call:
    """One request in flight: its kind (``chat`` or ``text``), ids, and where its jobs'
    updates arrive."""

    kind: str
    rid: str
    model: str
    n_choices: int
    prompt_tokens: int
    queue: asyncio.Queue
    logprobs: bool = False
    include_usage: bool = False
    access: dict[str, Any] = field(default_factory=dict)

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"


class EngineFailed(Exception):
    """The engine ended a completion with an error."""


async def collect(call: Call) -> dict[str, Any]:
    """The whole response once every choice has finished."""
    texts = [""] * call.n_choices
    entries: list[list[dict]] = [[] for _ in range(call.n_choices)]
    finish: list[str | None] = [None] * call.n_choices
    events: list[dict[str, Any]] = []
    completion_tokens = 0
    while any(f is None for f in finish):
        update: Update = await call.queue.get()
        if update.finish_reason == ERROR:
            raise EngineFailed(update.error or "generation failed")
        texts[update.index] += update.text
        events += update.events
        if update.logprob is not None:
            entries[update.index].append(update.logprob)
        if update.finish_reason is not None:
            finish[update.index] = update.finish_reason
            completion_tokens += update.completion_tokens
    choices = [_choice(call, i, texts[i], entries[i], finish[i]) for i in range(call.n_choices)]
    call.access.update(completion_tokens=completion_tokens, finish=finish)
    extra: dict[str, Any] = {"usage": usage(call.prompt_tokens, completion_tokens)}
    if events:
        extra["steer"] = {"events": events}
    return envelope(call.object_name, call.rid, call.model, choices, **extra)


def _choice(call: Call, i: int, text: str, entries: list[dict], finish: str | None) -> dict:
    if call.kind == "chat":
        logprobs = {"content": entries} if call.logprobs else None
        message = {"role": "assistant", "content": text}
        return {"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}
    logprobs = completion_logprobs(entries) if call.logprobs else None
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}


async def stream(call: Call) -> AsyncIterator[str]:
    """Server-sent events: a chunk per step that has something to say, then ``[DONE]``."""
    kind = "chat.completion.chunk" if call.kind == "chat" else "text_completion"
    if call.kind == "chat":
        for i in range(call.n_choices):
            first = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            yield _sse(envelope(kind, call.rid, call.model, [{**first, "finish_reason": None}]))
    open_choices, completion_tokens = call.n_choices, 0
    finish: list[str | None] = [None] * call.n_choices
    while open_choices:
        update: Update = await call.queue.get()
        if update.finish_reason == ERROR:
            yield _sse(error_body(update.error or "generation failed", kind="server_error"))
            break
        if update.finish_reason is not None:
            open_choices -= 1
            completion_tokens += update.completion_tokens
            finish[update.index] = update.finish_reason
        if not (update.text or update.events or update.logprob or update.finish_reason):
            continue
        extra = {"steer": {"events": update.events}} if update.events else {}
        choice = _chunk_choice(call, update)
        yield _sse(envelope(kind, call.rid, call.model, [choice], **extra))
    call.access.update(completion_tokens=completion_tokens, finish=finish)
    if call.include_usage:
        yield _sse(
            envelope(
                kind, call.rid, call.model, [], usage=usage(call.prompt_tokens, completion_tokens)
            )
        )
    yield "data: [DONE]\n\n"


def _chunk_choice(call: Call, update: Update) -> dict[str, Any]:
    entries = [update.logprob] if update.logprob is not None else []
    if call.kind == "chat":
        delta = {"content": update.text} if update.text else {}
        logprobs = {"content": entries} if call.logprobs and entries else None
        return {
            "index": update.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": update.finish_reason,
        }
    logprobs = completion_logprobs(entries) if call.logprobs and entries else None
    return {
        "index": update.index,
        "text": update.text,
        "logprobs": logprobs,
        "finish_reason": update.finish_reason,
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
