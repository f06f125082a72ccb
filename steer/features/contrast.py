"""Rank SAE features by how well they separate two sets of texts.

Each text becomes one number per feature: its maximum activation over the positions training
kept (special tokens, position 0 and norm outliers are skipped; see
:mod:`steer.features.encode`). Per feature we then compare the positive set with the negative
one: AUROC (the probability that a random positive text scores above a random negative one,
ties counting one half), Cohen's d, the mean activation and the firing rate in each set.
Features are ranked by ``|AUROC - 0.5|``; ``AUROC > 0.5`` means the feature fires more on the
positive texts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from steer.errors import SteerError


def pooled_activations(
    model: Any,
    sae: Any,
    texts: Sequence[str],
    *,
    ctx_len: int = 128,
    batch: int = 8,
    progress: bool = True,
    desc: str = "encoding",
) -> torch.Tensor:
    """``[len(texts), d_sae]``: each text's maximum activation of every feature over its kept
    positions (zero for a text with none)."""
    from steer.features.encode import pool_texts

    return pool_texts(
        model, sae, texts, ctx_len=ctx_len, batch=batch, progress=progress, desc=desc
    )["max"]


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-column AUROC of ``pos`` ``[n_pos, F]`` against ``neg`` ``[n_neg, F]``.

    Exact, with ties: the Mann-Whitney U statistic from average ranks, divided by
    ``n_pos * n_neg``. Vectorised over the F columns.
    """
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    scores = torch.cat([pos, neg]).double().T.contiguous()  # [F, n]
    ordered = scores.sort(dim=1).values
    # Average 1-based rank of each score among its ties: (first + last) / 2.
    below = torch.searchsorted(ordered, scores, right=False)
    through = torch.searchsorted(ordered, scores, right=True)
    ranks = (below + through + 1).double() / 2
    u = ranks[:, :n_pos].sum(dim=1) - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).float()


def cohens_d(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-column Cohen's d: difference of means over the pooled standard deviation (0 where
    both sets are constant)."""
    n1, n2 = pos.shape[0], neg.shape[0]
    pos, neg = pos.double(), neg.double()
    var1 = pos.var(dim=0, unbiased=True) if n1 > 1 else torch.zeros(pos.shape[1])
    var2 = neg.var(dim=0, unbiased=True) if n2 > 1 else torch.zeros(neg.shape[1])
    dof = max(n1 + n2 - 2, 1)
    pooled = (((n1 - 1) * var1 + (n2 - 1) * var2) / dof).sqrt()
    diff = pos.mean(dim=0) - neg.mean(dim=0)
    d = torch.where(pooled > 0, diff / pooled.clamp_min(1e-12), torch.zeros_like(diff))
    return d.float()


@dataclass(frozen=True)
class FeatureContrast:
    """How one feature separates the positive texts from the negative ones."""

    feature: int
    auroc: float
    cohens_d: float
    mean_pos: float
    mean_neg: float
    fire_pos: float  # fraction of positive texts where the feature fires at all
    fire_neg: float
    label: str | None = None

    @property
    def direction(self) -> str:
        """``+``: fires more on the positive texts; ``-``: on the negative ones."""
        return "+" if self.auroc >= 0.5 else "-"


def contrast(pos: torch.Tensor, neg: torch.Tensor) -> list[FeatureContrast]:
    """Every feature's contrast statistics, ranked by ``|AUROC - 0.5|`` then ``|d|``.

    ``pos`` and ``neg`` are pooled activations ``[n_texts, d_sae]``.
    """
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise SteerError("contrast needs at least one positive and one negative text")
    au = auroc(pos, neg)
    d = cohens_d(pos, neg)
    mean_pos, mean_neg = pos.mean(dim=0), neg.mean(dim=0)
    fire_pos, fire_neg = (pos > 0).float().mean(dim=0), (neg > 0).float().mean(dim=0)
    # Sort by separation, then by effect size, then by id (a reproducible order).
    sep, size = (au - 0.5).abs().tolist(), d.abs().tolist()
    order = sorted(range(len(sep)), key=lambda f: (-sep[f], -size[f], f))
    return [
        FeatureContrast(
            feature=f,
            auroc=float(au[f]),
            cohens_d=float(d[f]),
            mean_pos=float(mean_pos[f]),
            mean_neg=float(mean_neg[f]),
            fire_pos=float(fire_pos[f]),
            fire_neg=float(fire_neg[f]),
        )
        for f in order
    ]


def with_labels(rows: Sequence[FeatureContrast], labels: dict) -> list[FeatureContrast]:
    """``rows`` with the label names of the features that have one (``labels``: id -> Label)."""
    return [replace(r, label=labels[r.feature].name) if r.feature in labels else r for r in rows]


def to_json(rows: Sequence[FeatureContrast], **meta: Any) -> str:
    """The ranked rows (with their direction) and ``meta`` as one JSON object."""
    return json.dumps(
        {**meta, "features": [{**asdict(r), "direction": r.direction} for r in rows]}, indent=2
    )
