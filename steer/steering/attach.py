"""Load a recipe's SAEs and attach them to a loaded model: each SAE's folder is found, loaded
on the CPU, checked against the recipe (layer) and then against the model (width, layer)."""

from __future__ import annotations

from pathlib import Path

from steer.errors import SteerError
from steer.model import LoadedModel
from steer.sae import SAE, check_fits_model, load_sae
from steer.sae.sources import resolve_sae_path, sae_overrides
from steer.steering.recipe import Recipe


def load_saes(recipe: Recipe, *, pm=None) -> dict[str, tuple[SAE, int | None]]:
    """Load every SAE of a recipe (on the CPU) with the layer it attaches to. Done before the
    model loads, so missing or corrupt SAE files fail in milliseconds."""
    loaded: dict[str, tuple[SAE, int | None]] = {}
    for i, spec in enumerate(recipe.saes):
        where = f"saes[{i}]"
        path = resolve_sae_path(spec, where=where)
        sae = load_sae(path, pm=pm, overrides=sae_overrides(spec, where=where))
        if spec.layer is not None and sae.cfg.layer is not None and spec.layer != sae.cfg.layer:
            raise SteerError(
                f"layer {spec.layer} does not match the SAE, trained on layer {sae.cfg.layer}",
                where=f"{where}.layer",
            )
        loaded[spec.id] = (sae, spec.layer if spec.layer is not None else sae.cfg.layer)
    return loaded


def resolve_hub_features(recipe: Recipe, saes: dict[str, tuple[SAE, int | None]]) -> Recipe:
    from steer.steering.check import resolve_features

    labelled = {
        step.sae for _, step in recipe.steps() if any(isinstance(f, str) for f in step.features)
    }
    hub: dict[str, tuple[Path, int]] = {}
    for i, spec in enumerate(recipe.saes):
        if spec.remote:
            # The folder is only read for labels; it is in the Hugging Face cache by now.
            folder = resolve_sae_path(spec, where=f"saes[{i}]") if spec.id in labelled else Path()
            hub[spec.id] = (folder, saes[spec.id][0].cfg.d_sae)
    return resolve_features(recipe, hub) if hub else recipe


def attach_saes(
    saes: dict[str, tuple[SAE, int | None]], model: LoadedModel, recipe: Recipe
) -> dict[str, tuple[SAE, int]]:
    """Check each SAE fits the model (width, layer) and move it to the model's device."""
    attached: dict[str, tuple[SAE, int]] = {}
    for i, spec in enumerate(recipe.saes):
        sae, layer = saes[spec.id]
        where = f"saes[{i}]"
        check_fits_model(
            sae,
            d_model=model.d_model,
            n_layers=model.n_layers,
            where=where,
            layer=layer,
            model_name=None if spec.allow_other_model else model.name,
        )
        attached[spec.id] = (sae.to(model.device).eval(), layer)  # check_fits_model: not None
    return attached
