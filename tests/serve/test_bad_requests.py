"""Bad requests get one clear line in OpenAI's error shape with the right status, and the
server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from support.server import base_recipe, running

from steer.serve.state import Limits, build_state
from steer.steering.recipe import parse_recipe

API_KEY = "test-key-123"
GOOD = {"messages": [{"role": "user", "content": "Paris is"}], "max_tokens": 4, "temperature": 0}


def post(url: str, body, *, path="/chat/completions", **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(url + path, content=content, headers=headers, timeout=30, **kwargs)


def steer_body(**steer) -> dict:
    return {**GOOD, "steer": steer}


CASES = [
    (b"{not json", 400, "malformed JSON", None),
    ("[1, 2]", 400, "must be a JSON object, got list", None),
    ({**GOOD, "colour": "red"}, 400, "colour: unknown key", "colour"),
    (
        {**GOOD, "temperature": "hot"},
        400,
        "temperature: Input should be a valid number",
        "temperature",
    ),
    ({**GOOD, "max_tokens": 100000}, 400, "exceeds this server's limit of 64", "max_tokens"),
    ({**GOOD, "n": 99}, 400, "n: 99 exceeds this server's limit", "n"),
    ({**GOOD, "frequency_penalty": 0.5}, 400, "penalties are not supported", "frequency_penalty"),
    ({**GOOD, "messages": []}, 400, "messages: must not be empty", "messages"),
    ({**GOOD, "model": "gpt-4o"}, 404, "unknown model 'gpt-4o'", "model"),
    (
        steer_body(interventions=[{"plugin": "nope", "sae": "s", "features": [1]}]),
        400,
        "steer.interventions[0].plugin: unknown intervention plugin 'nope'",
        "steer.interventions[0].plugin",
    ),
    (
        steer_body(
            interventions=[{"plugin": "clamp", "sae": "s", "features": [1, 99], "value": 1.0}]
        ),
        400,
        "steer.interventions[0].features[1]: feature 99 is out of range (SAE s has 32)",
        "steer.interventions[0].features[1]",
    ),
    (
        steer_body(
            interventions=[{"plugin": "clamp", "sae": "other", "features": [1], "value": 1}]
        ),
        400,
        "steer.interventions[0].sae: unknown SAE 'other' (known: 's')",
        "steer.interventions[0].sae",
    ),
    (
        steer_body(interventions=[{"plugin": "clamp", "sae": "s", "features": [1]}]),
        400,
        "steer.interventions[0]: intervention 'clamp' needs a `value`",
        "steer.interventions[0]",
    ),
    (
        steer_body(monitors=[{"sae": "s", "features": [1], "treshold": 2.0}]),
        400,
        "steer.monitors[0]",
        None,
    ),
    (
        steer_body(
            interventions=[
                {"plugin": "clamp", "sae": "s", "features": ["no-such-label"], "value": 1}
            ]
        ),
        400,
        "steer.interventions[0].features[0]",
        "steer.interventions[0].features[0]",
    ),
    (steer_body(path="/etc/passwd"), 400, "steer.path: unknown key", "steer.path"),
]


@pytest.mark.parametrize(("body", "status", "message", "param"), CASES)
def test_bad_request_is_one_clear_line(server, body, status, message, param):
    url, _ = server
    response = post(url, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    assert post(url, GOOD).status_code == 200  # and the server keeps serving


def test_openai_client_raises_with_the_message(client):
    import openai

    with pytest.raises(openai.BadRequestError, match=r"steer\.interventions\[0\]\.features\[1\]"):
        client.chat.completions.create(
            model="tiny-llama",
            messages=GOOD["messages"],
            extra_body={
                "steer": {"interventions": [{"plugin": "ablate", "sae": "s", "features": [0, 32]}]}
            },
        )


def test_unknown_route_and_method_are_json_errors(server):
    url, _ = server
    assert httpx.get(url + "/nothing").status_code == 404
    assert "no route" in httpx.get(url + "/nothing").json()["error"]["message"]
    assert httpx.get(url + "/chat/completions").status_code == 405


@pytest.fixture(scope="module")
def small_server(tiny_model, sae_dir):
    """A server with an API key, a 2 KB body limit, one row and no queue."""
    limits = Limits(api_key=API_KEY, max_body_bytes=2048, max_tokens=200)
    state = build_state(
        parse_recipe(base_recipe(sae_dir)), limits, model=tiny_model, max_batch=1, max_queue=0
    )
    with running(state) as url:
        yield url, state


def authorised(key=API_KEY) -> dict:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [{}, authorised("wrong"), {"authorization": API_KEY}])
def test_missing_or_wrong_api_key_is_401(small_server, headers):
    url, _ = small_server
    response = post(url, GOOD, headers=headers)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]["message"]
    assert httpx.get(url + "/models", headers=headers).status_code == 401
    assert post(url, GOOD, headers=authorised()).status_code == 200


def test_health_needs_no_key(small_server):
    url, _ = small_server
    health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["running"] == 0


def test_oversize_body_is_413(small_server):
    url, _ = small_server
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post(url, big, headers=authorised())
    assert response.status_code == 413
    assert "exceeds the limit of 2048" in response.json()["error"]["message"]


def test_full_queue_is_429_with_retry_after(small_server, tiny_model):
    import threading

    from steer.serve.jobs import Job
    from steer.serve.sampling import Sampling

    url, state = small_server
    # A job whose second update blocks the engine: it holds the only row until released,
    # however fast the tiny model is.
    release, holding, updates = threading.Event(), threading.Event(), []

    def emit(update):
        updates.append(update)
        if len(updates) == 2:
            holding.set()
            release.wait(10)

    ids = tiny_model.tokenizer("Paris is")["input_ids"]
    state.engine.submit([Job(ids, Sampling(max_tokens=5), state.resolver.default, emit)])
    assert holding.wait(10)
    try:
        busy = post(url, GOOD, headers=authorised())
    finally:
        release.set()
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "1"
    assert "busy" in busy.json()["error"]["message"]
    assert post(url, GOOD, headers=authorised()).status_code == 200
