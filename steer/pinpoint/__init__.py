"""Circuit pinpointing: which SAE features (or residual neurons) cause a behaviour.

``steer pinpoint RECIPE`` scores every node's effect on a metric (logit difference or
log-probability of a target token) by attribution patching or integrated gradients, verifies
the top ones by real ablation, compares with the residual stream's neurons at the same layer,
and measures the side effects of the edit on unrelated text. See docs/pinpoint.md.
"""

from __future__ import annotations

from steer.pinpoint.recipe import PinpointRecipe, load_pinpoint_recipe, parse_pinpoint_recipe
from steer.pinpoint.run import Pinpointer, PinpointResult, pinpoint

__all__ = [
    "PinpointRecipe",
    "PinpointResult",
    "Pinpointer",
    "load_pinpoint_recipe",
    "parse_pinpoint_recipe",
    "pinpoint",
]
