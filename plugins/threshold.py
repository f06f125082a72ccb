"""Built-in monitor ``threshold``: an event whenever a watched feature exceeds a threshold."""

from pydantic import BaseModel, ConfigDict, Field

from steer import MonitorType, hookimpl


class ThresholdSettings(BaseModel):
    """What a ``threshold`` monitor entry may say beyond the common keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    threshold: float = Field(0.0, description="An event where an activation is above this.")


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
