"""The HTTP routes: OpenAI's ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``,
plus ``/v1/steer/features`` (search the SAEs' labels) and ``/health``.

Every problem with a request is one JSON error in OpenAI's shape, never a 500: 400 for a bad
field (named, ``steer.interventions[0].features[1]: ...``), 401 for a missing or wrong API
key, 404 for an unknown model or route, 413 for an oversize body, 429 (with ``Retry-After``)
when the queue is full.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from steer.errors import SteerError
from steer.serve.guard import Guard
from steer.serve.jobs import Job
from steer.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    error_body,
    new_id,
    parse_request,
)
from steer.serve.responses import Call, EngineFailed, collect, stream
from steer.serve.sampling import Sampling
from steer.serve.state import ServerState


class Problem(Exception):
    """A request refused with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str, *, param: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers


def create_app(get_state: Callable[[], ServerState]) -> Any:
    """The ASGI app serving ``get_state()``'s model (a function, so that a Ray Serve replica
    can build its state after the app object was shipped to it)."""
    app = FastAPI(title="steer", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Problem)
    async def problem(_request: Request, exc: Problem):
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = error_body(str(exc), kind=kind, param=exc.param)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc):
        body = error_body(f"no route {request.method} {request.url.path}")
        return JSONResponse(body, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, _exc):
        body = error_body(f"{request.url.path} does not take {request.method}")
        return JSONResponse(body, status_code=405)

    @app.get("/health")
    async def health():
        state = get_state()
        # pid: which process answered (a Ray Serve replica, behind its proxy)
        return {"status": "ok", "model": state.names[0], "pid": os.getpid(), **state.engine.load()}

    @app.get("/v1/models")
    async def models():
        state = get_state()
        data = [{"id": state.names[0], "object": "model", "created": 0, "owned_by": "steer"}]
        return {"object": "list", "data": data}

    @app.get("/v1/steer/features")
    async def features(q: str = "", sae: str | None = None, limit: int = 20):
        return {"object": "list", "data": search_labels(get_state(), q, sae, limit)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await complete(request, get_state(), "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, get_state(), "text")

    async def complete(request: Request, state: ServerState, kind: str):
        call, jobs, streaming = await prepare(request, state, kind)
        try:
            state.engine.submit(jobs)
        except Exception as exc:  # QueueFull
            retry = str(state.limits.retry_after_s)
            raise Problem(
                429, f"the server is busy ({exc}); retry later", **{"Retry-After": retry}
            ) from None
        request.scope["state"]["access"] = call.access
        if streaming:
            return StreamingResponse(
                _cancel_on_exit(stream(call), jobs),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.ensure_future(_watch_disconnect(request, jobs))
        try:
            return await collect(call)
        except EngineFailed as exc:
            raise Problem(500, str(exc)) from None
        finally:
            watcher.cancel()
            for job in jobs:
                job.cancelled = True  # a no-op for finished jobs; frees rows otherwise

    # The key is read per request, so a Ray replica's own state decides it.
    return Guard(app, api_key=lambda: get_state().limits.api_key)


async def prepare(request, state: ServerState, kind: str) -> tuple[Call, list[Job], bool]:
    """Read, check and turn a completion request into jobs; any problem is a :class:`Problem`."""
    body = await read_body(request, state.limits.max_body_bytes)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, f"malformed JSON: {exc}") from None
    try:
        req = parse_request(ChatRequest if kind == "chat" else CompletionRequest, data)
        try:
            state.check_model(req.model)
        except SteerError as exc:
            raise Problem(404, str(exc), param="model") from None
        prompts = prompt_ids(state, req, kind)
        sampling = sampling_of(state, req, max(len(p) for p in prompts))
        steps = state.resolver.resolve(req.steer)
    except SteerError as exc:
        raise Problem(400, str(exc), param=exc.where) from None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    deadline = time.monotonic() + state.limits.timeout_s
    jobs = [
        Job(
            prompt_ids=ids,
            sampling=sampling,
            steps=steps,
            emit=lambda update: loop.call_soon_threadsafe(queue.put_nowait, update),
            index=p * req.n + i,
            deadline=deadline,
        )
        for p, ids in enumerate(prompts)
        for i in range(req.n)
    ]
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    call = Call(
        kind=kind,
        rid=new_id(prefix),
        model=req.model or state.names[0],
        n_choices=len(jobs),
        prompt_tokens=sum(len(p) for p in prompts),
        queue=queue,
        logprobs=req.logprob_request()[0],
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )
    call.access.update(
        request_id=call.rid,
        prompt_tokens=call.prompt_tokens,
        choices=len(jobs),
        steered=req.steer is not None,
    )
    return call, jobs, req.stream


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it, when the
    client says its length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def prompt_ids(state: ServerState, req, kind: str) -> list[list[int]]:
    """Each prompt's token ids: chat messages through the model's chat template, a text
    prompt as it is (with the tokenizer's own special tokens)."""
    tokenizer = state.model.tokenizer
    if kind == "chat":
        if not state.model.has_chat_template:
            raise SteerError(
                "this model has no chat template: use /v1/completions", where="messages"
            )
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts = [tokenizer(text, add_special_tokens=False)["input_ids"]]
    else:
        prompts = [tokenizer(p)["input_ids"] for p in req.prompts()]
    for ids in prompts:
        if not ids:
            raise SteerError(
                "the prompt has no tokens", where="prompt" if kind == "text" else "messages"
            )
    return prompts


def sampling_of(state: ServerState, req, prompt_tokens: int) -> Sampling:
    """The request's sampling settings, the served recipe's where it gives none, within the
    server's limits and the model's context."""
    gen, limits = state.recipe.generation, state.limits
    max_tokens = req.token_limit() or min(gen.max_new_tokens, limits.max_tokens)
    field = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
    if max_tokens > limits.max_tokens:
        raise SteerError(
            f"{max_tokens} exceeds this server's limit of {limits.max_tokens}", where=field
        )
    if req.min_tokens > max_tokens:
        raise SteerError(f"{req.min_tokens} exceeds max_tokens {max_tokens}", where="min_tokens")
    if req.n > limits.max_n:
        raise SteerError(f"{req.n} exceeds this server's limit of {limits.max_n}", where="n")
    context = state.context
    if context is not None and prompt_tokens + max_tokens > context:
        raise SteerError(
            f"{prompt_tokens} prompt tokens plus {max_tokens} new ones exceed the model's context of {context}",
            where=field,
        )
    logprobs, top = req.logprob_request()
    return Sampling(
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        temperature=gen.temperature if req.temperature is None else req.temperature,
        top_p=gen.top_p if req.top_p is None else req.top_p,
        seed=gen.seed if req.seed is None else req.seed,
        stop=req.stops(),
        logprobs=logprobs,
        top_logprobs=top,
    )


def search_labels(state: ServerState, query: str, sae: str | None, limit: int) -> list[dict]:
    """Labelled features of the served SAEs whose name or description contains ``query``."""
    from steer.sae.labels import load_labels

    if sae is not None and sae not in state.resolver.sae_info:
        known = ", ".join(state.resolver.sae_info)
        raise Problem(400, f"unknown SAE {sae!r} (known: {known})", param="sae")
    if not 1 <= limit <= 1000:
        raise Problem(400, "limit must be between 1 and 1000", param="limit")
    needle = query.lower()
    found = []
    for sae_id, (folder, _) in state.resolver.sae_info.items():
        if sae is not None and sae_id != sae:
            continue
        for feature, label in sorted(load_labels(folder).items()):
            if needle in label.name.lower() or needle in label.description.lower():
                found.append(
                    {
                        "sae": sae_id,
                        "feature": feature,
                        "label": label.name,
                        "description": label.description,
                        "source": label.source,
                    }
                )
    return found[:limit]


async def _watch_disconnect(request, jobs: list[Job]) -> None:
    """Cancel a non-streamed request's jobs if its client goes away."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)
    for job in jobs:
        job.cancelled = True


async def _cancel_on_exit(events, jobs: list[Job]):
    """A stream's events; when the stream ends early (the client left), its jobs stop."""
    try:
        async for event in events:
            yield event
    finally:
        for job in jobs:
            job.cancelled = True
