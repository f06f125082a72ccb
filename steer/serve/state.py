"""What a running server holds: the engine, the request checker, the served names, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steer.errors import SteerError


@dataclass(frozen=True)
class Limits:
    """The server's bounds on what one request may ask for."""

    api_key: str | None = None  # bearer token every /v1 request must carry, when set
    max_body_bytes: int = 1 << 20
    max_tokens: int = 1024  # the most new tokens a request may ask for
    max_n: int = 8
    timeout_s: float = 300.0  # a request's completions end ("timeout") after this long
    retry_after_s: int = 1  # told to clients refused with 429


@dataclass
class ServerState:
    """One served recipe: its loaded model and SAEs behind a :class:`ServeEngine`."""

    engine: Any  # steer.serve.engine.ServeEngine
    resolver: Any  # steer.serve.steering.SteeringResolver
    model: Any  # steer.model.LoadedModel
    recipe: Any  # the served recipe, features resolved
    limits: Limits
    names: list[str] = field(default_factory=list)  # model names requests may use

    @property
    def context(self) -> int | None:
        value = getattr(self.model.hf.config, "max_position_embeddings", None)
        return value if isinstance(value, int) else None

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise SteerError(
                f"unknown model {name!r} (this server serves {', '.join(map(repr, self.names))})",
                where="model",
            )


def build_state(recipe, limits: Limits, *, device: str | None = None, model=None, **engine_kw):
    """Load ``recipe``'s model and SAEs and start the engine that serves them."""
    from steer.plugins.manager import get_plugin_manager
    from steer.serve.engine import ServeEngine
    from steer.serve.steering import SteeringResolver
    from steer.steering.engine import Steerer
    from steer.steering.remote import refuse_remote

    refuse_remote(recipe, "steer serve")  # its step loop runs the model here
    pm = get_plugin_manager()
    steerer = Steerer(recipe, pm=pm, model=model, device=device)
    engine = ServeEngine(steerer, **engine_kw).start()
    resolver = SteeringResolver(steerer.recipe, steerer.saes, pm)
    # Requests may name the model as it was loaded or as the recipe names it.
    names = [steerer.model.name]
    if steerer.recipe.model not in names:
        names.append(steerer.recipe.model)
    return ServerState(engine, resolver, steerer.model, steerer.recipe, limits, names)
