"""steer: steer language models through sparse-autoencoder features.

The public API, for notebooks and scripts::

    from steer import load_recipe, Steerer
    results = Steerer(load_recipe("recipes/demo.yaml")).run()

Importing ``steer`` has no side effects and loads neither torch nor any plugin: the names
below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Recipe": "steer.recipe",
    "load_recipe": "steer.recipe",
    "parse_recipe": "steer.recipe",
    "Steerer": "steer.engine",
    "RunResults": "steer.engine",
    "PromptResult": "steer.engine",
    "run_recipe": "steer.engine",
    "load_model": "steer.model",
    "LoadedModel": "steer.model",
    "load_sae": "steer.sae",
    "save_sae": "steer.sae",
    "SteerError": "steer.errors",
    "get_plugin_manager": "steer.plugins",
    "hookimpl": "steer.hookspecs",
    "InterventionType": "steer.interventions",
    "MonitorType": "steer.monitors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steer' has no attribute {name!r}")
