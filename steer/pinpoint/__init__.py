"""Circuit pinpointing: which SAE features (or residual neurons) cause a behaviour.

``steer pinpoint RECIPE`` scores every node's effect on a metric (logit difference or
log-probability of a target token) by attribution patching or integrated gradients, verifies
the top ones by real ablation, compares with the residual stream's neurons at the same layer,
and measures the side effects of the edit on unrelated text. See docs/pinpoint.md.
"""

from __future__ import annotations

from steer.lazy import lazy_exports

# Imported on first use, so that `steer check` reads a pinpoint recipe without torch.
_EXPORTS = {
    "PinpointRecipe": "steer.pinpoint.recipe",
    "load_pinpoint_recipe": "steer.pinpoint.recipe",
    "parse_pinpoint_recipe": "steer.pinpoint.recipe",
    "PinpointResult": "steer.pinpoint.run",
    "Pinpointer": "steer.pinpoint.run",
    "pinpoint": "steer.pinpoint.run",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
