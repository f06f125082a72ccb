"""Intervention types: how a recipe step changes the activations of SAE features.

Plugins register :class:`InterventionType` objects through the
``steer_register_interventions`` hook. The engine hands ``apply`` the current activations of
the selected features and writes back ``x + (new - old) @ W_dec[features]``: only the change
is decoded, and the SAE's reconstruction error stays in the residual stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steer.plugins.registry import RegistryKind

if TYPE_CHECKING:  # plugins load without torch: `steer --help` stays fast
    import torch

ApplyFn = Callable[["torch.Tensor", "float | None"], "torch.Tensor"]


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


INTERVENTIONS: RegistryKind[InterventionType] = RegistryKind(
    hook="steer_register_interventions",
    kind="intervention",
    expected=InterventionType,
    callables=("apply",),
    lookup="intervention plugin",
)
