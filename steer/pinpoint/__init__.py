"""Circuit pinpointing: which SAE features (or residual neurons) cause a behaviour.

``steer pinpoint RECIPE`` scores every node's effect on a metric (logit difference or
log-probability of a target token) by attribution patching or integrated gradients, verifies
the top ones by real ablation, compares with the residual stream's neurons at the same layer,
and measures the side effects of the edit on unrelated text. See docs/pinpoint.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use, so that `steer check` reads a pinpoint recipe without torch.
_HOMES = {
    "PinpointRecipe": "steer.pinpoint.recipe",
    "load_pinpoint_recipe": "steer.pinpoint.recipe",
    "parse_pinpoint_recipe": "steer.pinpoint.recipe",
    "PinpointResult": "steer.pinpoint.run",
    "Pinpointer": "steer.pinpoint.run",
    "pinpoint": "steer.pinpoint.run",
}

__all__ = [
    "PinpointRecipe",
    "PinpointResult",
    "Pinpointer",
    "load_pinpoint_recipe",
    "parse_pinpoint_recipe",
    "pinpoint",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'steer.pinpoint' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
