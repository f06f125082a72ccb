"""Validate a recipe against the installed plugins and the SAEs' cfg.json, without loading the
model or any weights: ``steer check`` answers in well under a second.

This is also the one place where a recipe's ``features`` (ids or labels) become feature ids:
:func:`resolve_features`, used here and by the engine.
"""

from __future__ import annotations

from pathlib import Path

from steer.errors import SteerError
from steer.plugins.registry import registry
from steer.sae import read_sae_config
from steer.sae.config import BUILTIN_CHECKS, agreed_site
from steer.sae.configs import architecture_class
from steer.sae.labels import Label, load_labels, resolve_feature
from steer.sae.sources import resolve_sae_path, sae_overrides
from steer.steering.interventions import INTERVENTIONS
from steer.steering.monitors import MONITORS, monitor_settings
from steer.steering.recipe import InterventionSpec, MonitorSpec, Recipe, ResponseSpec
from steer.steering.remote import check_remote, check_remote_sae


def check_recipe(recipe: Recipe, pm) -> Recipe:
    """Raise a one-line :class:`SteerError` for the first problem found in ``recipe``; return
    the recipe with every feature label replaced by its id.

    Checks: every plugin exists; interventions that need a ``value`` have one; each monitor's
    settings fit what its plugin declares (the plugin's defaults are filled in); every feature
    index is below the SAE's ``d_sae``; every feature label is in the SAE's labels.json; a
    recipe's ``layer`` agrees with the SAE's own. SAEs fetched from the Hugging Face Hub are
    checked when they are loaded instead.
    """
    local: dict[str, tuple[Path, int]] = {}
    for i, spec in enumerate(recipe.saes):
        where = f"saes[{i}]"
        if spec.release is not None:
            _check_release(spec, recipe.model, where)
        if spec.remote:
            continue  # checking would mean a download; load_saes checks it
        folder = resolve_sae_path(spec, where=where)
        cfg = read_sae_config(folder, pm=pm, overrides=sae_overrides(spec, where=where))
        local[spec.id] = (folder, cfg.d_sae)
        agreed_site(cfg, site=spec.site, layer=spec.layer, where=where)
        if recipe.remote and cfg.architecture not in BUILTIN_CHECKS:  # a plugin's class
            check_remote_sae(recipe, i, architecture_class(cfg, pm, where=where))
    check_steps(recipe, pm)
    check_remote(recipe, pm)  # what cannot run where `remote:` says, before anything is sent
    return resolve_features(with_monitor_settings(recipe, pm), local)


def check_steps(recipe: Recipe, pm) -> None:
    """Every intervention and monitor names an installed plugin, and every intervention (a
    monitor's conditional one included) that needs a ``value`` has one."""
    for where, step in recipe.steps():
        if isinstance(step, InterventionSpec):
            kind = registry(pm, INTERVENTIONS).get(step.plugin, where=f"{where}.plugin")
            if kind.requires_value and step.value is None:
                raise SteerError(f"intervention {step.plugin!r} needs a `value`", where=where)
        else:
            registry(pm, MONITORS).get(step.plugin, where=f"{where}.plugin")
            if isinstance(step.action, ResponseSpec):
                at = f"{where}.action"
                kind = registry(pm, INTERVENTIONS).get(step.action.plugin, where=f"{at}.plugin")
                if kind.requires_value and step.action.value is None:
                    raise SteerError(
                        f"intervention {step.action.plugin!r} needs a `value`", where=at
                    )


def with_monitor_settings(recipe: Recipe, pm) -> Recipe:
    """``recipe`` with each monitor's settings checked against its plugin and completed with
    the plugin's defaults (so ``spec.threshold`` is there even when the recipe left it out)."""
    monitors = []
    for i, spec in enumerate(recipe.monitors):
        monitor = registry(pm, MONITORS).get(spec.plugin, where=f"monitors[{i}].plugin")
        settings = monitor_settings(
            monitor, spec.settings, where=f"monitors[{i}]", n_features=len(spec.features)
        )
        # Rebuilt rather than updated, so the settings read in the order the plugin declares.
        common = spec.model_dump(exclude=set(spec.settings), exclude_unset=True)
        monitors.append(type(spec).model_validate({**common, **settings}))
    return recipe.model_copy(update={"monitors": monitors})


def resolve_features(recipe: Recipe, saes: dict[str, tuple[Path, int]]) -> Recipe:
    """``recipe`` with the features of every step on an SAE in ``saes`` as range-checked ids.

    ``saes`` maps a recipe SAE id to its folder and ``d_sae``; labels are looked up in the
    labels.json in that folder. Steps on other SAEs are left as they are.
    """
    labels: dict[str, dict[int, Label]] = {}

    def resolve(where: str, sae: str, refs: list[int | str]) -> list[int]:
        folder, size = saes[sae]
        out: list[int] = []
        for j, ref in enumerate(refs):
            at = f"{where}[{j}]"
            if isinstance(ref, int):
                if ref >= size:
                    raise SteerError(
                        f"feature {ref} is out of range (SAE {sae} has {size})", where=at
                    )
                out.append(ref)
                continue
            if sae not in labels:
                labels[sae] = load_labels(folder)
            out.append(resolve_feature(labels[sae], ref, d_sae=size, where=at, sae=folder.name))
        return out

    def ids(where: str, step: InterventionSpec | MonitorSpec) -> InterventionSpec | MonitorSpec:
        if step.sae not in saes:
            return step
        update: dict = {"features": resolve(f"{where}.features", step.sae, step.features)}
        action = getattr(step, "action", None)
        if isinstance(action, ResponseSpec) and action.features is not None:
            feats = resolve(f"{where}.action.features", step.sae, action.features)
            update["action"] = action.model_copy(update={"features": feats})
        return step.model_copy(update=update)

    prompts = [
        prompt.model_copy(
            update={
                "interventions": [
                    ids(f"prompts[{p}].interventions[{i}]", s)
                    for i, s in enumerate(prompt.interventions)
                ]
            }
        )
        for p, prompt in enumerate(recipe.prompts)
    ]
    return recipe.model_copy(
        update={
            "interventions": [
                ids(f"interventions[{i}]", s) for i, s in enumerate(recipe.interventions)
            ],
            "prompts": prompts,
            "monitors": [ids(f"monitors[{i}]", s) for i, s in enumerate(recipe.monitors)],
        }
    )


def _check_release(spec, model: str, where: str) -> None:
    """A release entry's names (without a download) and the model its release is for."""
    from steer.sae.fit import model_names_differ
    from steer.sae.releases import find_release

    release = find_release(spec.release, spec.sae_id, where=where)
    if not spec.allow_other_model and model_names_differ(release.model, model):
        raise SteerError(
            f"release {spec.release!r} is for {release.model!r}, not {model!r} (set "
            "`allow_other_model: true` on the SAE entry to attach it anyway)",
            where=where,
        )
