"""Intervention types: how a recipe step changes the activations of SAE features.

Plugins register :class:`InterventionType` objects through the
``steer_register_interventions`` hook. The engine hands ``apply`` the current activations of
the selected features and writes back ``x + (new - old) @ W_dec[features]``: only the change
is decoded, and the SAE's reconstruction error stays in the residual stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from steer.registries import Registered, build_registry, lookup

ApplyFn = Callable[[torch.Tensor, "float | None"], torch.Tensor]


@dataclass(frozen=True)
class InterventionType:
    """One kind of feature edit.

    Attributes:
        name: what recipes write as ``plugin:``.
        apply: ``apply(acts, value) -> new_acts``. ``acts`` has shape
            ``[n_positions, n_features]`` (the features a step selects, on the positions it
            edits); the result must have the same shape. ``value`` is the step's ``value``
            (``None`` when the recipe gave none). Must not modify ``acts`` in place.
        description: one line for ``steer plugins``.
        requires_value: recipes must give ``value`` (checked before the model loads).
    """

    name: str
    apply: ApplyFn
    description: str = ""
    requires_value: bool = False


def _validate(obj: object) -> None:
    if not isinstance(obj, InterventionType):
        raise TypeError(f"expected steer.interventions.InterventionType, got {type(obj).__name__}")
    if not obj.name or not obj.name.replace("-", "_").isidentifier():
        raise ValueError(f"intervention name {obj.name!r} must be a non-empty identifier")
    if not callable(obj.apply):
        raise TypeError(f"intervention {obj.name!r}: apply is not callable")


def get_interventions(pm) -> dict[str, Registered[InterventionType]]:
    """Every intervention the plugins of ``pm`` register, by name (cached on ``pm``)."""
    return build_registry(
        pm,
        "steer_register_interventions",
        kind="intervention",
        name_of=lambda it: it.name,
        validate=_validate,
    )


def resolve_intervention(pm, name: str, *, where: str) -> InterventionType:
    """Look up an intervention by name, or fail with the list of known ones."""
    return lookup(pm, get_interventions(pm), name, what="intervention plugin", where=where)
