"""Built-in monitor ``linear``: a weighted sum of the watched features, token by token.

What a sparse probe on SAE features (``steer monitor eval``'s ``sparse`` detector) becomes
during generation: at each token, ``score = sum_i weights[i] * acts[i] + bias`` over the
entry's ``features`` (in their order), and an event where ``score > threshold``. The event
names the feature that contributes most at that token. Not monotone (a weight may be
negative), so the engine encodes the watched features exactly rather than screening them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from steer import MonitorType, SteerError, hookimpl


class LinearSettings(BaseModel):
    """What a ``linear`` monitor entry may say beyond the common keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    weights: list[float] = Field(
        min_length=1, description="One weight per entry of `features`, in the same order."
    )
    bias: float = Field(0.0, description="Added to the weighted sum.")
    threshold: float = Field(0.0, description="An event where the score is above this.")


def linear_score(acts, spec):
    """``[batch, positions]``: the weighted sum of ``acts`` ``[batch, positions, n]``."""
    import torch

    w = torch.tensor(spec.weights, dtype=acts.dtype, device=acts.device)
    if w.shape[0] != acts.shape[-1]:
        raise SteerError(
            f"the linear monitor has {w.shape[0]} weights for {acts.shape[-1]} features "
            "(one weight per feature, in the order of `features`)",
            where="monitors.weights",
        )
    return acts @ w + spec.bias


def over_linear(acts, spec):
    import torch

    fired = linear_score(acts, spec) > spec.threshold
    top = (acts * torch.tensor(spec.weights, dtype=acts.dtype, device=acts.device)).argmax(-1)
    mask = torch.zeros_like(acts, dtype=torch.bool)
    return mask.scatter_(-1, top.unsqueeze(-1), fired.unsqueeze(-1))


@hookimpl
def steer_register_monitors(register):
    register(
        MonitorType(
            "linear",
            over_linear,
            "report each token where `weights` . activations + `bias` exceeds `threshold`",
            settings=LinearSettings,
            score=linear_score,
            per_feature=("weights",),
        )
    )
