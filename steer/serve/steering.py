"""A request's ``steer`` field: interventions and monitors in the recipe's own schema, checked
as strictly as a recipe (the same messages, under ``steer.``), and turned into the steps of
that request's batch row.

A request can only name SAEs the served recipe loaded: it never makes the server read a path
or download anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from steer.errors import SteerError
from steer.schema import StrictModel
from steer.steering.check import check_steps, resolve_features, with_monitor_settings
from steer.steering.plan import RowSteps
from steer.steering.recipe import InterventionSpec, MonitorSpec, PromptSpec, Recipe

FIELD = "steer"


class RequestSteering(StrictModel):
    """The ``steer`` field of a completion request."""

    interventions: list[InterventionSpec] = Field(default_factory=list)
    monitors: list[MonitorSpec] = Field(default_factory=list)
    replace: bool = Field(
        False, description="Use only these, not the served recipe's own interventions/monitors."
    )


class SteeringResolver:
    """Turns requests' ``steer`` fields into :class:`RowSteps` for a loaded recipe.

    ``recipe`` is the served recipe with its features already resolved to ids (a
    :class:`~steer.steering.engine.Steerer`'s); ``saes`` its loaded SAEs.
    """

    def __init__(self, recipe: Recipe, saes: dict[str, Any], pm):
        from steer.sae.sources import resolve_sae_path

        self.recipe = recipe
        self.pm = pm
        # Each SAE's folder (its labels.json) and width, found once: requests never make the
        # server look for files.
        self.sae_info: dict[str, tuple[Path, int]] = {
            spec.id: (resolve_sae_path(spec, where=f"saes[{i}]"), saes[spec.id][0].cfg.d_sae)
            for i, spec in enumerate(recipe.saes)
        }
        self.default = RowSteps(
            list(recipe.interventions),
            list(zip(recipe.group_names(), recipe.monitors, strict=True)),
        )

    def sae_ids(self) -> list[str]:
        return list(self.sae_info)

    def resolve(self, steering: RequestSteering | None) -> RowSteps:
        """The steps of a request's row: the served recipe's, plus (or, with ``replace``,
        instead of) the request's. A problem is a :class:`SteerError` at ``steer.<path>``."""
        if steering is None or (
            not steering.interventions and not steering.monitors and not steering.replace
        ):
            return self.default
        try:
            own = self._checked(steering)
        except SteerError as exc:
            raise SteerError(
                str(exc).removeprefix(f"{exc.where}: "), where=_under(exc.where)
            ) from None
        names = [f"{FIELD}.{name}" if name.startswith("monitors[") else name for name in own[1]]
        monitors = list(zip(names, own[0].monitors, strict=True))
        if steering.replace:
            return RowSteps(list(own[0].interventions), monitors)
        taken = {name for name, _ in self.default.monitors}
        for i, (name, _) in enumerate(monitors):
            if name in taken:
                raise SteerError(
                    f"the served recipe already has a monitor named {name!r}",
                    where=f"{FIELD}.monitors[{i}].name",
                )
        return RowSteps(
            self.default.interventions + list(own[0].interventions),
            self.default.monitors + monitors,
        )

    def _checked(self, steering: RequestSteering) -> tuple[Recipe, list[str]]:
        """The request's own steps as a recipe (checked, features as ids) and group names."""
        known = self.sae_ids()
        steps: list[tuple[str, Any]] = [
            (f"interventions[{i}]", s) for i, s in enumerate(steering.interventions)
        ] + [(f"monitors[{i}]", s) for i, s in enumerate(steering.monitors)]
        for where, step in steps:
            if step.sae not in known:
                listed = ", ".join(repr(x) for x in known) or "none"
                raise SteerError(
                    f"unknown SAE {step.sae!r} (known: {listed})", where=f"{where}.sae"
                )
        recipe = self.recipe.model_copy(
            update={
                "prompts": [PromptSpec(text="request")],
                "interventions": list(steering.interventions),
                "monitors": list(steering.monitors),
            }
        )
        names = recipe.group_names()
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise SteerError(f"two monitors are named {name!r}", where=f"monitors[{i}].name")
        check_steps(recipe, self.pm)
        return resolve_features(with_monitor_settings(recipe, self.pm), self.sae_info), names


def _under(where: str | None) -> str:
    return f"{FIELD}.{where}" if where else FIELD
