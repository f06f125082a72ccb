"""Attribution methods: how a node's effect on the metric is estimated from gradients.

Plugins register :class:`AttributionMethod` objects through the
``steer_register_attribution_methods`` hook (the built-in ``attribution_patching`` and
``integrated_gradients`` come from ``plugins/pinpoint.py``). A method gets an
:class:`AttributionContext` and returns one score per node (plus one for the SAE error node):
the estimated change of the mean metric when that node alone is moved from its clean value to
its target (0, the mean, or the counterfactual value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steer.plugins.registry import RegistryKind

if TYPE_CHECKING:  # annotations only: `steer check` reads this module without torch
    import torch

    from steer.pinpoint.nodes import NodeSet


@dataclass(frozen=True)
class Gradients:
    """Gradients of the mean metric with respect to node activations, per bucket:
    ``nodes[b]`` ``[B, T, n]`` and, for an SAE, ``error[b]`` ``[B, T, d]``."""

    nodes: list[torch.Tensor]
    error: list[torch.Tensor] | None


@dataclass
class AttributionContext:
    """What an attribution method can ask for.

    ``gradients(alpha)``: one forward and backward with every node at
    ``clean + alpha * (target - clean)`` (the error node stays at its clean value); ``score``
    turns (path-averaged) gradients into per-node scores ``sum_positions grad * (target -
    clean)``, averaged over prompts. ``steps`` is the recipe's ``steps``.
    """

    nodes: NodeSet
    steps: int
    gradients: Callable[[float], Gradients]

    def score(self, grads: Gradients) -> tuple[torch.Tensor, float | None]:
        """``(node_scores [n], error_score)`` from gradients (``error_score`` is ``None`` for
        bases without an error node)."""
        # The gradients are of the mean metric, so these sums are already per-prompt averages.
        node = sum(
            (g * d).sum(dim=(0, 1)) for g, d in zip(grads.nodes, self.nodes.delta, strict=True)
        )
        err = None
        if grads.error is not None and self.nodes.err_delta is not None:
            err = float(
                sum((g * d).sum() for g, d in zip(grads.error, self.nodes.err_delta, strict=True))
            )
        return node, err


@dataclass(frozen=True)
class AttributionMethod:
    """One way of scoring nodes.

    Attributes:
        name: what pinpoint recipes write as ``method:``.
        score: ``score(ctx) -> (node_scores [n], error_score | None)``.
        description: one line for ``steer plugins``.
    """

    name: str
    score: Callable[[AttributionContext], tuple[torch.Tensor, float | None]]
    description: str = ""


ATTRIBUTION_METHODS: RegistryKind[AttributionMethod] = RegistryKind(
    hook="steer_register_attribution_methods",
    kind="attribution method",
    expected=AttributionMethod,
    callables=("score",),
)
