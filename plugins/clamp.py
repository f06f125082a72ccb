"""Built-in intervention ``clamp``: pin features to a fixed activation."""

import torch

from steer.hookspecs import hookimpl
from steer.interventions import InterventionType


def clamp(acts: torch.Tensor, value: float | None) -> torch.Tensor:
    return torch.full_like(acts, value)


@hookimpl
def steer_register_interventions(register):
    register(
        InterventionType(
            "clamp", clamp, "pin the features to `value` on every edited token", requires_value=True
        )
    )
