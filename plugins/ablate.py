"""Built-in intervention ``ablate``: switch features off (set their activation to 0)."""

import torch

from steer.hookspecs import hookimpl
from steer.interventions import InterventionType


def ablate(acts: torch.Tensor, value: float | None) -> torch.Tensor:
    return torch.zeros_like(acts)


@hookimpl
def steer_register_interventions(register):
    register(InterventionType("ablate", ablate, "set the features to 0 (switch them off)"))
