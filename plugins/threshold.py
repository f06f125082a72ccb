"""Built-in monitor ``threshold``: an event whenever a watched feature exceeds a threshold."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steer import MonitorType, hookimpl


class ThresholdSettings(BaseModel):
    """What a ``threshold`` monitor entry may say beyond the common keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    threshold: float = Field(0.0, description="An event where an activation is above this.")

    @model_validator(mode="after")
    def _warn_below_zero(self) -> ThresholdSettings:
        # Allowed (an SAE plugin may produce negative activations), but for every built-in
        # architecture it fires on every token: most likely not what was meant.
        if self.threshold < 0:
            logging.getLogger(__name__).warning(
                "threshold %g is below 0: SAE activations are never negative, so the monitor "
                "fires on every token it reads",
                self.threshold,
            )
        return self


def over_threshold(acts, spec):
    return acts > spec.threshold


@hookimpl
def steer_register_monitors(register):
    register(
        MonitorType(
            "threshold",
            over_threshold,
            "report each token where a feature exceeds `threshold`",
            monotone=True,
            settings=ThresholdSettings,
        )
    )
