"""Monitor types: read feature activations during generation and report events.

A monitor never changes the model. It sees the activations of the features it watches, read
from the residual stream *after* every intervention at that site (what the model really
carries), on the prompt pass and on every generated token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from steer.registries import Registered, build_registry, lookup

# observe(acts [batch, positions, features], spec) -> bool mask of the same shape: which
# (position, feature) pairs are events.
ObserveFn = Callable[[torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class MonitorType:
    """One kind of monitor.

    Attributes:
        name: what recipes write as a monitor's ``plugin:``.
        observe: ``observe(acts, spec) -> mask``; ``acts`` has shape
            ``[batch, positions, n_features]`` for the watched features (padding already
            excluded by the engine), ``spec`` is the recipe's :class:`steer.recipe.MonitorSpec`.
            Returns a boolean mask of the same shape; each True is reported as an event.
        description: one line for ``steer plugins``.
        monotone: ``observe`` never loses a hit when activations grow (true of a threshold
            test). The engine may then screen with a cheap upper bound of the activations
            (:meth:`steer.sae.base.SAE.encode_features_bound`) and encode exactly only where
            the bound already fires; otherwise it encodes every position exactly.
    """

    name: str
    observe: ObserveFn
    description: str = ""
    monotone: bool = False


def _validate(obj: object) -> None:
    if not isinstance(obj, MonitorType):
        raise TypeError(f"expected steer.monitors.MonitorType, got {type(obj).__name__}")
    if not callable(obj.observe):
        raise TypeError(f"monitor {obj.name!r}: observe is not callable")


def get_monitors(pm) -> dict[str, Registered[MonitorType]]:
    """Every monitor type the plugins of ``pm`` register, by name (cached on ``pm``)."""
    return build_registry(
        pm, "steer_register_monitors", kind="monitor", name_of=lambda m: m.name, validate=_validate
    )


def resolve_monitor(pm, name: str, *, where: str) -> MonitorType:
    """Look up a monitor type by name, or fail with the list of known ones."""
    return lookup(pm, get_monitors(pm), name, what="monitor plugin", where=where)
