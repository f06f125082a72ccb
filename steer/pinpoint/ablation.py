"""Verification: really ablate sets of nodes and measure the metric.

Each edit is a real forward with ``h + delta[..., S] @ D[S]`` at the kept positions (only the
change of the selected nodes is decoded; the SAE error stays untouched). Several node sets
are stacked into one batch, which is much faster on a CPU than one forward per set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from steer.model.trace import last_logits
from steer.pinpoint.metric import Metric
from steer.pinpoint.nodes import Bucket, NodeSet

# Rows (prompt x node set) per stacked forward: big enough to keep the matmuls efficient,
# small enough to stay far from memory limits on long prompts.
_MAX_ROWS = 128


def clean_metric(buckets: list[Bucket], nodes: NodeSet, metric: Metric) -> torch.Tensor:
    """The clean metric per prompt, in recipe order ``[n_prompts]``."""
    n = sum(len(b.rows) for b in buckets)
    out = torch.empty(n)
    for bucket, logits in zip(buckets, nodes.run.logits, strict=True):
        out[bucket.rows] = metric(logits, bucket.rows)
    return out


def ablated_metrics(
    model: Any,
    buckets: list[Bucket],
    nodes: NodeSet,
    metric: Metric,
    sets: list[torch.Tensor],
    *,
    on_done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Mean metric over prompts with each node set in ``sets`` ablated: ``[len(sets)]``."""
    return ablated_metrics_per_prompt(model, buckets, nodes, metric, sets, on_done=on_done).mean(1)


def ablated_metrics_per_prompt(
    model: Any,
    buckets: list[Bucket],
    nodes: NodeSet,
    metric: Metric,
    sets: list[torch.Tensor],
    *,
    on_done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The metric of every prompt (recipe order) with each node set ablated:
    ``[len(sets), n_prompts]``."""
    n_prompts = sum(len(b.rows) for b in buckets)
    out = torch.zeros(len(sets), n_prompts)
    directions = nodes.basis.directions
    for b, bucket in enumerate(buckets):
        per_forward = max(1, _MAX_ROWS // len(bucket.rows))
        for s0 in range(0, len(sets), per_forward):
            chunk = sets[s0 : s0 + per_forward]
            hidden = torch.cat([_edit(nodes, b, sel, directions) for sel in chunk])
            ids = bucket.ids.repeat(len(chunk), 1)
            with torch.inference_mode():
                logits = last_logits(model, nodes.run.layer, ids, hidden)
                values = metric(logits, bucket.rows * len(chunk))
            out[s0 : s0 + len(chunk), bucket.rows] = values.view(len(chunk), -1).float()
            if on_done is not None:
                on_done(len(chunk) * len(bucket.rows))
    return out


def _edit(nodes: NodeSet, b: int, sel: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    sel = torch.as_tensor(sel, dtype=torch.long)
    return nodes.run.hidden[b] + nodes.delta[b][..., sel] @ directions[sel]
