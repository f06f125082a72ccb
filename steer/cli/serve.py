"""``steer serve``: the recipe's model and SAEs behind an OpenAI-compatible HTTP server, where
every request may bring its own interventions and monitors (one process, or Ray Serve
replicas with ``--ray``)."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import typer
from rich.text import Text

from steer.cli.common import about, debug_option, device_option, err_console
from steer.errors import SteerError

API_KEY_ENV = "STEER_API_KEY"


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``steer`` app."""
    app.command("serve")(serve)


def serve(
    recipe_path: Path = typer.Argument(
        ..., metavar="RECIPE", help="YAML recipe: model, SAEs, defaults."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (default: loopback only)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free one)."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar=API_KEY_ENV,
        help=f"Require this bearer token on /v1 (or ${API_KEY_ENV}).",
    ),
    device: str | None = device_option(),
    max_batch: int = typer.Option(
        16, "--max-batch", min=1, max=1024, help="Requests generating at once."
    ),
    max_queue: int = typer.Option(
        64, "--max-queue", min=0, help="Requests waiting beyond those (then 429)."
    ),
    max_tokens: int = typer.Option(
        1024, "--max-tokens", min=1, help="Most new tokens one request may ask for."
    ),
    max_body: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="Largest request body."),
    timeout: float = typer.Option(
        300.0, "--timeout", min=0.001, help="Seconds before a request ends (finish_reason timeout)."
    ),
    access_log: Path | None = typer.Option(
        None, "--access-log", help="Append JSON access-log lines here (default: stderr)."
    ),
    ray: bool = typer.Option(
        False, "--ray", help="Serve through Ray Serve (pip install 'steer[ray]')."
    ),
    replicas: int = typer.Option(
        1, "--replicas", min=1, max=1024, help="Ray Serve replicas (with --ray)."
    ),
    debug: bool = debug_option(),
) -> None:
    """Serve a recipe over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models)
    with per-request steering in the `steer` field of the body."""
    from steer.serve.state import Limits
    from steer.steering.recipe import load_recipe
    from steer.steering.remote import refuse_remote

    if replicas > 1 and not ray:
        raise SteerError("--replicas needs --ray")
    check_host(host)
    if not api_key and not is_loopback(host):
        err_console.print(
            Text("warning:", "yellow"),
            f"serving on {host} without --api-key: anyone who can reach it can use it",
        )
    recipe = load_recipe(recipe_path)
    with about(recipe_path):
        refuse_remote(recipe, "steer serve")
    limits = Limits(
        api_key=api_key or None, max_body_bytes=max_body, max_tokens=max_tokens, timeout_s=timeout
    )
    engine_kw = {"max_batch": max_batch, "max_queue": max_queue}
    setup_access_log(access_log)
    if ray:
        from steer.serve.ray_app import run_ray

        run_ray(
            str(recipe_path),
            limits,
            engine_kw,
            replicas=replicas,
            host=host,
            port=port,
            device=device,
        )
        return
    from steer.serve.state import build_state

    with err_console.status("loading the model and SAEs"), about(recipe_path):
        state = build_state(recipe, limits, device=device, **engine_kw)
    run_uvicorn(state, host, port)


def check_host(host: str) -> None:
    """A host that is an address or a plain name (no scheme, no port)."""
    if not host or any(c in host for c in "/ @") or host.count(":") == 1:
        raise SteerError(
            f"--host {host!r} is not an address or host name (e.g. 127.0.0.1, 0.0.0.0)"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_access_log(path: Path | None) -> None:
    """One JSON line per request, on stderr or appended to ``path``."""
    logger = logging.getLogger("steer.serve.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if path is not None:
        from steer.io import check_writable

        check_writable(path, what="access log")
        handler: logging.Handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]


def run_uvicorn(state, host: str, port: int) -> None:
    """Serve until interrupted; the engine stops with the server."""
    import signal

    import uvicorn

    from steer.serve.app import create_app

    config = uvicorn.Config(
        create_app(lambda: state), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    original = server.startup

    async def announce(*args, **kwargs):
        await original(*args, **kwargs)
        for listener in server.servers:
            for sock in listener.sockets:
                bound_host, bound_port = sock.getsockname()[:2]
                url = f"http://{bound_host}:{bound_port}/v1"
                # soft_wrap: a URL split over two lines cannot be copied or parsed
                err_console.print(
                    f"serving {state.names[0]} on {url} (Ctrl-C stops)", soft_wrap=True
                )

    server.startup = announce
    signals: list[int] = []
    handle_exit = server.handle_exit

    def record_signal(sig: int, frame: object) -> None:
        signals.append(sig)
        handle_exit(sig, frame)

    # uvicorn re-raises a Ctrl-C after its graceful shutdown, but asyncio's runner may swallow
    # it when the serving task is already finishing (exit 0, measured in CI); the shell's 130
    # for Ctrl-C should not depend on that race.
    server.handle_exit = record_signal
    try:
        server.run()
    finally:
        state.engine.stop()
    if signal.SIGINT in signals:
        raise KeyboardInterrupt


def run_ray(
    recipe_path: str, limits, engine_kw: dict, *, replicas: int, host: str, port: int, device
) -> None:
    """``--ray``: deploy the replicas, then serve until interrupted (Ray shuts down with it)."""
    import time

    try:
        import ray
        from ray import serve as ray_serve
    except ImportError:
        raise SteerError("--ray needs Ray Serve: pip install 'steer[ray]'") from None
    from steer.serve.ray_app import start_ray, steer_deployment

    app = steer_deployment(recipe_path, limits, engine_kw, replicas=replicas, device=device)
    with err_console.status(f"starting Ray Serve with {replicas} replica(s)"):
        start_ray(app, host=host, port=port)
    err_console.print(
        f"serving on http://{host}:{port}/v1 with {replicas} Ray Serve replica(s) (Ctrl-C stops)",
        soft_wrap=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ray_serve.shutdown()
        ray.shutdown()
