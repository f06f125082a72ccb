"""What of a recipe cannot run with ``remote:``, refused by name before anything is sent.

A remote server (:mod:`steer.model.remote`) runs the traces it is sent against a model it
already holds, with torch, transformers and nnsight installed, and sends back what the traces
saved. So:

* the model must be one it can name: a Hugging Face Hub id (not the bundled GGUF, a ``.gguf``
  file or a local folder), in the dtype and placement it was deployed with;
* every piece of code a trace calls must travel with it: steer's own code does (by value),
  a third-party plugin's (an intervention, an SAE architecture) would need an import the
  server cannot do;
* nothing may need a Python callback here while the model runs: monitors report events,
  warn, stop prompts and start responses from a callback after every token.

``remote: local`` runs the model here, so only the last two apply to it (it is the dry run of
what a server would get).
"""

from __future__ import annotations

from typing import Any

from steer.errors import SteerError
from steer.model.remote import remote_model_problem, sends_requests
from steer.plugins.registry import registry
from steer.steering.interventions import INTERVENTIONS
from steer.steering.recipe import InterventionSpec, Recipe

# The packages that travel with a remote trace (steer.model.remote.SHIPPED_PACKAGES).
_SHIPPED = ("steer", "steer_plugins")
MONITOR_REFUSAL = (
    "a monitor cannot run remotely: its events, warnings, stops and responses come from a "
    "Python callback on this machine after every token (remove the monitor, or `remote`)"
)


def shipped_code(obj: Any) -> bool:
    """Whether ``obj`` (a function or class) is steer's own code, which a remote trace carries
    with it; a wrapped plugin function is judged by the function it wraps."""
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in _SHIPPED


def check_remote_model(recipe: Any) -> None:
    """Refuse a model a remote server cannot run (``true`` or a URL only): one that has no Hub
    id, and (for steering recipes) a ``dtype`` or ``device_map``, which the server decides."""
    if not sends_requests(recipe.remote):
        return
    problem = remote_model_problem(recipe.model)
    if problem is not None:
        raise SteerError(problem, where="model")
    for field, what in (
        ("dtype", "runs the model in the dtype it was deployed with"),
        ("device_map", "places the model on its own devices"),
    ):
        if getattr(recipe, field, None) is not None:
            raise SteerError(f"a remote server {what}; remove {field} (or `remote`)", where=field)


def check_remote(recipe: Recipe, pm: Any) -> None:
    """Raise a one-line :class:`SteerError` naming the first part of a steering recipe that
    cannot run where its ``remote:`` says (nothing when it runs here)."""
    if not recipe.remote:
        return
    check_remote_model(recipe)
    kinds = registry(pm, INTERVENTIONS)
    for where, step in recipe.steps():
        if isinstance(step, InterventionSpec):
            apply = kinds.get(step.plugin, where=f"{where}.plugin").apply
            if not shipped_code(apply):
                own = sorted(n for n, kind in kinds.objects().items() if shipped_code(kind.apply))
                raise SteerError(
                    f"intervention {step.plugin!r} comes from module {apply.__module__!r}, which "
                    "a remote server cannot import: only steer's own interventions run remotely "
                    f"({', '.join(own)})",
                    where=f"{where}.plugin",
                )
    if recipe.monitors:
        raise SteerError(MONITOR_REFUSAL, where="monitors[0]")


def refuse_remote(recipe: Any, command: str) -> None:
    """For the commands that run the model here only (``steer serve``, ``steer eval``,
    ``steer monitor score``): a recipe's ``remote:`` is an error, not ignored."""
    if recipe.remote:
        raise SteerError(
            f"{command} runs the model on this machine; remove `remote` (steer run and steer "
            "pinpoint run recipes remotely)",
            where="remote",
        )


def check_remote_sae(recipe: Any, index: int, cls: type) -> None:
    """Refuse an SAE whose class is a third-party plugin's (its code would not import on the
    server); ``index`` is its place in ``recipe.saes``."""
    if recipe.remote and not shipped_code(cls):
        raise SteerError(
            f"SAE architecture {cls.__name__} comes from module {cls.__module__!r}, which a "
            "remote server cannot import: only steer's own architectures run remotely",
            where=f"saes[{index}]",
        )
