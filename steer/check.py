"""Validate a recipe against the installed plugins and the SAEs' cfg.json, without loading the
model or any weights: ``steer check`` answers in well under a second."""

from __future__ import annotations

from steer.errors import SteerError
from steer.interventions import resolve_intervention
from steer.monitors import resolve_monitor
from steer.recipe import InterventionSpec, Recipe
from steer.sae import read_sae_config
from steer.sae.sources import resolve_sae_path


def check_recipe(recipe: Recipe, pm) -> None:
    """Raise a one-line :class:`SteerError` for the first problem found in ``recipe``.

    Checks: every plugin exists; interventions that need a ``value`` have one; every feature
    index is below the SAE's ``d_sae``; a recipe's ``layer`` agrees with the SAE's own. SAEs
    fetched from the Hugging Face Hub are checked when they are loaded instead.
    """
    d_sae: dict[str, int] = {}
    for i, spec in enumerate(recipe.saes):
        if spec.hf is not None:
            continue  # checking would mean a download; load_saes checks it
        where = f"saes[{i}]"
        cfg = read_sae_config(resolve_sae_path(spec, where=where), pm=pm)
        d_sae[spec.id] = cfg.d_sae
        if spec.layer is not None and cfg.layer is not None and spec.layer != cfg.layer:
            raise SteerError(
                f"layer {spec.layer} does not match the SAE, trained on layer {cfg.layer}",
                where=f"{where}.layer",
            )
    for where, step in recipe.steps():
        if isinstance(step, InterventionSpec):
            kind = resolve_intervention(pm, step.plugin, where=f"{where}.plugin")
            if kind.requires_value and step.value is None:
                raise SteerError(f"intervention {step.plugin!r} needs a `value`", where=where)
        else:
            resolve_monitor(pm, step.plugin, where=f"{where}.plugin")
        size = d_sae.get(step.sae)
        for j, feature in enumerate(step.features):
            if size is not None and feature >= size:
                raise SteerError(
                    f"feature {feature} is out of range (SAE {step.sae} has {size})",
                    where=f"{where}.features[{j}]",
                )
