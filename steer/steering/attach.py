"""Load a recipe's SAEs and attach them to a loaded model: each SAE's folder is found, loaded
on the CPU, given its site (its config's, or the recipe's ``site``/``layer``) and then checked
against the model (the model it names, the site, the width)."""

from __future__ import annotations

from pathlib import Path

from steer.model import LoadedModel
from steer.model.sites import Hook
from steer.model.trace import block_device
from steer.sae import SAE, load_sae
from steer.sae.fit import check_fits_site, sae_hook
from steer.sae.sources import resolve_sae_path, sae_overrides
from steer.steering.recipe import Recipe


def load_saes(recipe: Recipe, *, pm=None) -> dict[str, tuple[SAE, Hook]]:
    """Load every SAE of a recipe (on the CPU) with the site it attaches to. Done before the
    model loads, so missing or corrupt SAE files fail in milliseconds."""
    loaded: dict[str, tuple[SAE, Hook]] = {}
    for i, spec in enumerate(recipe.saes):
        where = f"saes[{i}]"
        path = resolve_sae_path(spec, where=where)
        sae = load_sae(path, pm=pm, overrides=sae_overrides(spec, where=where))
        loaded[spec.id] = (sae, sae_hook(sae, site=spec.site, layer=spec.layer, where=where))
    return loaded


def resolve_hub_features(recipe: Recipe, saes: dict[str, tuple[SAE, Hook]]) -> Recipe:
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
    saes: dict[str, tuple[SAE, Hook]], model: LoadedModel, recipe: Recipe
) -> dict[str, tuple[SAE, Hook]]:
    """Check each SAE fits the model (the model it names, its site, the width) and move it to
    the model's device."""
    attached: dict[str, tuple[SAE, Hook]] = {}
    for i, spec in enumerate(recipe.saes):
        sae, hook = saes[spec.id]
        model_name = None if spec.allow_other_model else model.name
        check_fits_site(sae, hook, model.hf.config, where=f"saes[{i}]", model_name=model_name)
        attached[spec.id] = (sae.to(block_device(model, hook.layer)).eval(), hook)
    return attached
