"""``steer check RECIPE``: validate any of steer's recipes without loading a model or weights.

The kind is read off the recipe's keys: a ``metric`` makes a pinpoint recipe, ``out`` (or
``data`` without ``prompts``) a training recipe, anything else a steering recipe. Each kind is
checked as far as it can be without loading: schema, plugins, SAE configs and features for
steering and pinpoint recipes; schema and data files for training recipes. Nothing here
imports torch, so the answer comes in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from steer.cli.common import about, debug_option
from steer.errors import SteerError


def register(app: typer.Typer) -> None:
    """Add ``check`` to the ``steer`` app."""
    app.command("check")(check)


def check(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML recipe file."),
    debug: bool = debug_option(),
) -> None:
    """Validate a recipe (steering, training or pinpoint) without loading the model."""
    from steer.io import read_yaml

    data = read_yaml(recipe_path)
    kind = recipe_kind(data)
    with about(recipe_path):
        summary = CHECKERS[kind](recipe_path)
    typer.echo(f"ok: {recipe_path} ({kind} recipe: {summary})")


def recipe_kind(data: Any) -> str:
    """``steering``, ``training`` or ``pinpoint``, from a recipe's top-level keys."""
    if not isinstance(data, dict):
        return "steering"  # its validator says what is wrong with a non-mapping
    if "metric" in data:
        return "pinpoint"
    if "out" in data or ("data" in data and "prompts" not in data):
        return "training"
    return "steering"


def _steering(path: Path) -> str:
    from steer.plugins.manager import get_plugin_manager
    from steer.steering.check import check_recipe
    from steer.steering.recipe import load_recipe

    recipe = load_recipe(path)
    check_recipe(recipe, get_plugin_manager())
    check_model_name(recipe.model)
    return (
        f"{len(recipe.prompts)} prompts, {len(recipe.saes)} SAEs, "
        f"{len(recipe.steps())} interventions and monitors"
    )


def _training(path: Path) -> str:
    from steer.training.recipe import load_train_recipe

    config = load_train_recipe(path)
    check_model_name(config.model)
    return (
        f"{config.architecture}, {config.d_sae} features, layer {config.layer}, "
        f"{len(config.data)} data sources, {config.total_steps} steps"
    )


def _pinpoint(path: Path) -> str:
    from steer.pinpoint.methods import ATTRIBUTION_METHODS
    from steer.pinpoint.recipe import load_pinpoint_recipe
    from steer.plugins.manager import get_plugin_manager
    from steer.plugins.registry import registry
    from steer.sae import read_sae_config
    from steer.sae.config import BUILTIN_CHECKS
    from steer.sae.configs import architecture_class
    from steer.sae.sources import resolve_sae_path, sae_overrides
    from steer.steering.remote import check_remote_model, check_remote_sae

    recipe = load_pinpoint_recipe(path)
    pm = get_plugin_manager()
    registry(pm, ATTRIBUTION_METHODS).get(recipe.method, where="method")
    check_remote_model(recipe)
    for i, spec in enumerate(recipe.saes):
        where = f"saes[{i}]"
        if spec.release is not None:
            from steer.sae.releases import find_release

            find_release(spec.release, spec.sae_id, where=where)  # the names, without a download
        if not spec.remote:  # an SAE on the Hub is checked when it is downloaded
            overrides = sae_overrides(spec, where=where)
            cfg = read_sae_config(resolve_sae_path(spec, where=where), pm=pm, overrides=overrides)
            if recipe.remote and cfg.architecture not in BUILTIN_CHECKS:  # a plugin's class
                check_remote_sae(recipe, i, architecture_class(cfg, pm, where=where))
    check_model_name(recipe.model)
    return f"{len(recipe.prompts)} prompts, {len(recipe.saes)} SAEs, method {recipe.method}"


CHECKERS = {"steering": _steering, "training": _training, "pinpoint": _pinpoint}


def check_model_name(name: str) -> None:
    """Refuse a model name that cannot be loaded from here: not the bundled model, not a local
    file or folder, and neither in the Hugging Face cache nor plausibly on the Hub (a
    misspelling of the bundled name, or a Hub id while offline)."""
    from steer.model.names import model_problem

    problem = model_problem(name)
    if problem is not None:
        raise SteerError(problem, where="model")
