"""A real steer server (uvicorn on a free loopback port, in a background thread) for tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from steer.serve.state import ServerState


@contextlib.contextmanager
def running(state: ServerState) -> Iterator[str]:
    """Serve ``state`` on 127.0.0.1 (a free port) and yield the base URL (``.../v1``); the
    server and its engine stop on exit."""
    import uvicorn

    from steer.serve.app import create_app

    config = uvicorn.Config(
        create_app(lambda: state), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        state.engine.stop()


def base_recipe(sae_dir, **extra):
    return {
        "saes": [{"id": "s", "path": str(sae_dir)}],
        "prompts": ["unused"],
        "generation": {"max_new_tokens": 12},
        **extra,
    }
