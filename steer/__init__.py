"""steer: steer language models through sparse-autoencoder features.

The public API, for notebooks and scripts::

    from steer import load_recipe, Steerer
    results = Steerer(load_recipe("recipes/demo.yaml")).run()

Importing ``steer`` has no side effects and loads neither torch nor any plugin: the names
below are imported on first use.
"""

from __future__ import annotations

from steer.lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module that defines it. Built-in plugins import only these names (a test
# enforces it), so they are what a third-party plugin may rely on too.
_EXPORTS = {
    # steering
    "Recipe": "steer.steering.recipe",
    "load_recipe": "steer.steering.recipe",
    "parse_recipe": "steer.steering.recipe",
    "Steerer": "steer.steering.engine",
    "run_recipe": "steer.steering.engine",
    "RunResults": "steer.steering.results",
    "PromptResult": "steer.steering.results",
    # the model and SAEs
    "DEFAULT_MODEL": "steer.model",
    "load_model": "steer.model",
    "LoadedModel": "steer.model",
    "SAE": "steer.sae",
    "SAEConfig": "steer.sae",
    "load_sae": "steer.sae",
    "save_sae": "steer.sae",
    # training
    "TrainConfig": "steer.training.config",
    "train_sae": "steer.training.run",
    "evaluate_sae": "steer.training.evaluate",
    # pinpointing
    "load_pinpoint_recipe": "steer.pinpoint",
    "Pinpointer": "steer.pinpoint",
    # plugins: the hook marker and what registry hooks register
    "get_plugin_manager": "steer.plugins",
    "hookimpl": "steer.plugins",
    "InterventionType": "steer.steering.interventions",
    "MonitorType": "steer.steering.monitors",
    "AttributionMethod": "steer.pinpoint.methods",
    "AttributionContext": "steer.pinpoint.methods",
    "Gradients": "steer.pinpoint.methods",
    "SteerError": "steer.errors",
    # evaluation: what judge plugins register and what they are given
    "JudgeType": "steer.evaluation.judges",
    "JudgeContext": "steer.evaluation.judges",
    "llm_model": "steer.evaluation.llm_models",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
