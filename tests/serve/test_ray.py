"""The server as a Ray Serve deployment with 2 replicas (separate processes behind Ray's
proxy): both answer, and their completions equal the single-process server's."""

from __future__ import annotations

import concurrent.futures
import socket

import httpx
import pytest
from support.server import running

from steer.model import load_model
from steer.serve.state import Limits, build_state
from steer.steering.recipe import load_recipe

PROMPTS = ["The cat sat on", "Paris is", "Once upon a time", "The dog ran"] * 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat(url: str, k: int) -> str:
    body = {
        "messages": [{"role": "user", "content": PROMPTS[k]}],
        "steer": {
            "interventions": [{"plugin": "clamp", "sae": "s", "features": [k], "value": 6.0}]
        },
    }
    response = httpx.post(f"{url}/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_two_ray_serve_replicas_serve_what_one_process_serves(recipe_file, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray import serve

    from steer.serve.ray_app import start_ray, steer_deployment

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to ~/.ray
    state = build_state(
        load_recipe(recipe_file), Limits(), model=load_model(str(recipe_file.parent / "tiny"))
    )
    with running(state) as url:
        expected = [chat(url, k) for k in range(len(PROMPTS))]
    port = free_port()
    app = steer_deployment(str(recipe_file), Limits(), {"max_batch": 8}, replicas=2, num_cpus=1)
    try:
        start_ray(app, host="127.0.0.1", port=port, num_cpus=2)
        url = f"http://127.0.0.1:{port}/v1"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda k: chat(url, k), range(len(PROMPTS))))
            pids = {
                r["pid"]
                for r in pool.map(
                    lambda _: httpx.get(f"http://127.0.0.1:{port}/health").json(), range(40)
                )
            }
        assert got == expected
        assert len(pids) == 2  # both replicas answered
    finally:
        serve.shutdown()
        ray.shutdown()


def test_the_serve_run_builder_names_what_it_needs(recipe_file):
    pytest.importorskip("ray")
    from ray.serve import Application

    from steer.errors import SteerError
    from steer.serve.ray_app import build_app

    with pytest.raises(SteerError, match="recipe=PATH"):
        build_app({})
    assert isinstance(build_app({"recipe": str(recipe_file), "replicas": "2"}), Application)
