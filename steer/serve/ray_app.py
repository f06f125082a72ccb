"""The same server as a Ray Serve deployment: N replicas, each loading the recipe's model and
SAEs and running its own engine, behind Ray's HTTP proxy (its routing and autoscaling).

Two ways in:

- ``steer serve RECIPE --ray --replicas N`` starts a local Ray (or joins ``RAY_ADDRESS``) and
  serves until interrupted;
- ``serve run steer.serve.ray_app:build_app recipe=RECIPE replicas=N`` is the Ray Serve
  application builder (``api_key``, ``max_batch``, ``num_cpus`` are further ``key=value``s).
"""

from __future__ import annotations

from typing import Any

from steer.serve.state import Limits


def steer_deployment(
    recipe_path: str,
    limits: Limits,
    engine_kw: dict[str, Any],
    *,
    replicas: int,
    num_cpus: float = 1.0,
    device: str | None = None,
) -> Any:
    """A bound Ray Serve application of ``replicas`` steer servers (``num_cpus`` each; torch
    uses that many threads in a replica)."""
    from ray import serve

    @serve.deployment(
        name="steer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        max_ongoing_requests=engine_kw.get("max_batch", 16) + engine_kw.get("max_queue", 64),
    )
    @serve.ingress()
    class SteerReplica:
        """One replica: a loaded recipe and its engine."""

        def __init__(self, recipe_path: str, limits: Limits, engine_kw: dict, threads: int):
            import torch

            from steer.serve.state import build_state
            from steer.steering.recipe import load_recipe

            torch.set_num_threads(max(1, threads))  # a replica's share of the machine
            recipe = load_recipe(recipe_path)
            self.state = build_state(recipe, limits, device=device, **engine_kw)

        def __serve_build_asgi_app__(self):
            from steer.serve.app import create_app

            return create_app(lambda: self.state)

    return SteerReplica.bind(recipe_path, limits, engine_kw, int(num_cpus))


def build_app(args: dict[str, str]) -> Any:
    """``serve run steer.serve.ray_app:build_app recipe=R [replicas=N] [api_key=K] ...``."""
    from steer.errors import SteerError

    if "recipe" not in args:
        raise SteerError("give recipe=PATH (and optionally replicas=N, api_key=KEY)")
    limits = Limits(api_key=args.get("api_key"))
    engine_kw = {
        "max_batch": int(args.get("max_batch", 16)),
        "max_queue": int(args.get("max_queue", 64)),
    }
    return steer_deployment(
        args["recipe"],
        limits,
        engine_kw,
        replicas=int(args.get("replicas", 1)),
        num_cpus=float(args.get("num_cpus", 1)),
    )


def start_ray(app: Any, *, host: str, port: int, num_cpus: int | None = None) -> None:
    """Start Ray (a local one unless ``RAY_ADDRESS`` names a cluster) and deploy ``app`` at
    ``http://host:port/``; returns once every replica is ready."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="steer", route_prefix="/", blocking=False)
