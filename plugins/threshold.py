"""Built-in monitor ``threshold``: an event whenever a watched feature exceeds a threshold."""

import torch

from steer.hookspecs import hookimpl
from steer.monitors import MonitorType


def over_threshold(acts: torch.Tensor, spec) -> torch.Tensor:
    return acts > spec.threshold


@hookimpl
def steer_register_monitors(register):
    register(
        MonitorType(
            "threshold",
            over_threshold,
            "report each token where a feature exceeds `threshold`",
            monotone=True,
        )
    )
