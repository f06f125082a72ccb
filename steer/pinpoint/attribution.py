"""Attribution patching: gradients of the metric with respect to every node at one layer.

The layer's output is replaced (in an nnsight trace, as everywhere in steer) by
``h + (a_leaf - a) @ D + e_leaf``, where ``a_leaf`` (the node activations) and ``e_leaf`` (an
offset on the SAE error, zero) are leaf tensors. At ``a_leaf = a`` this is exactly the clean
residual stream, so one backward gives ``d metric / d a`` for every node and
``d metric / d error`` for the error node, which is held as a constant of its own. nnsight
traces keep autograd on and return real tensors, so the backward runs after the trace.
"""

from __future__ import annotations

from typing import Any

import torch

from steer.model.trace import last_logits
from steer.pinpoint.methods import AttributionContext, AttributionMethod, Gradients
from steer.pinpoint.metric import Metric
from steer.pinpoint.nodes import Bucket, NodeSet


def node_gradients(
    model: Any, buckets: list[Bucket], nodes: NodeSet, metric: Metric, alpha: float
) -> Gradients:
    """Gradients of the mean metric over all prompts at ``clean + alpha * delta``."""
    n_prompts = sum(len(b.rows) for b in buckets)
    grads, err_grads = [], []
    for b, bucket in enumerate(buckets):
        a = nodes.acts[b]
        a_leaf = (a + alpha * nodes.delta[b]).detach().requires_grad_(True)
        e_leaf = None
        if nodes.err_delta is not None:
            e_leaf = torch.zeros_like(nodes.run.hidden[b]).requires_grad_(True)
        with torch.enable_grad():
            new = nodes.edited_hidden(b, a_leaf - a, e_leaf)
            logits = last_logits(model, nodes.run.layer, bucket.ids, new)
            (metric(logits, bucket.rows).sum() / n_prompts).backward()
        grads.append(a_leaf.grad.detach())
        if e_leaf is not None:
            err_grads.append(e_leaf.grad.detach())
    return Gradients(nodes=grads, error=err_grads if nodes.err_delta is not None else None)


def attribute(
    model: Any,
    buckets: list[Bucket],
    nodes: NodeSet,
    metric: Metric,
    method: AttributionMethod,
    *,
    steps: int,
) -> tuple[torch.Tensor, float | None]:
    """Score every node of ``nodes`` with ``method``: ``(scores [n], error_score)``."""
    ctx = AttributionContext(
        nodes=nodes,
        steps=steps,
        gradients=lambda alpha: node_gradients(model, buckets, nodes, metric, alpha),
    )
    scores, err = method.score(ctx)
    return scores.detach().float(), err
