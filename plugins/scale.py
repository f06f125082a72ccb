"""Built-in intervention ``scale``: multiply feature activations (0 ablates, 2 doubles)."""

import torch

from steer.hookspecs import hookimpl
from steer.interventions import InterventionType


def scale(acts: torch.Tensor, value: float | None) -> torch.Tensor:
    return acts * value


@hookimpl
def steer_register_interventions(register):
    register(
        InterventionType(
            "scale", scale, "multiply the features' activations by `value`", requires_value=True
        )
    )
