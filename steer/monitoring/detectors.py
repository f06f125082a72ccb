"""The detector kinds compared by ``steer monitor eval``, all built from steer's parts.

Every kind is fitted on one or more labelled sets (each an
:class:`~steer.monitoring.labelled.EncodedSet`) and scores a set's texts (higher: more
likely positive):

``group``
    Feature groups by contrast, as the shipped monitors were built: features ranked by AUROC
    on the pooled fit sets, the best one first, the next ones (among the top
    ``candidates``) kept while each raises the group's fit AUROC by ``min_gain``. Score: the
    group's max activation (what the ``threshold`` monitor tests).
``consistent``
    The same group, but a feature is ranked by its *worst* AUROC over the fit sets and the
    greedy step maximises the group's worst fit-set AUROC: features that separate every fit
    set rather than the pooled one. With one fit set it is ``group``.
``sparse``
    L1 logistic regression on every SAE feature, pooled per text
    (:func:`steer.monitoring.sparse.train_sparse_probe`); ``n_features`` is how many weights
    are non-zero.
``sparse-token``
    The same probe read token by token, as the ``linear`` monitor plugin reads it during
    generation: a text's score is its max over kept tokens of ``acts @ w + b``.
``dense``
    L2 logistic regression on the residual stream, mean-pooled per text
    (:func:`steer.monitoring.probe.train_probe`: ``steer probe``'s baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steer.errors import SteerError
from steer.monitoring.labelled import EncodedSet
from steer.monitoring.thresholds import score_auroc

KINDS = ("group", "consistent", "sparse", "sparse-token", "dense")
MAX_GROUP = 32  # the largest group either greedy selection builds


@dataclass
class Detector:
    """A fitted detector: ``score(encoded) -> [n]`` and what it reads."""

    kind: str
    score: Callable[[EncodedSet], torch.Tensor]
    n_features: int  # SAE features it reads (dense: residual dimensions)
    features: list[int] = field(default_factory=list)  # SAE feature ids, where it has few
    weights: list[float] = field(default_factory=list)  # per-token weights (sparse kinds)
    bias: float = 0.0


def _split(sets: Sequence[EncodedSet], attr: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(getattr(s, attr)[s.labels], getattr(s, attr)[~s.labels]) for s in sets]


def _greedy(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], order: list[int], *, min_gain: float
) -> list[int]:
    """Forward selection in ``order``: a feature joins when the group's worst AUROC over
    ``pairs`` (the max of its features' activations) rises by at least ``min_gain``."""

    def worst(ids: list[int]) -> float:
        return min(
            score_auroc(p[:, ids].max(dim=1).values, n[:, ids].max(dim=1).values) for p, n in pairs
        )

    ids, cur = [order[0]], worst(order[:1])
    for f in order[1:]:
        if len(ids) >= MAX_GROUP:
            break
        gain = worst([*ids, f])
        if gain >= cur + min_gain:
            ids, cur = [*ids, f], gain
    return ids


def fit_group(
    sets: Sequence[EncodedSet],
    *,
    consistent: bool = False,
    candidates: int = 64,
    min_gain: float = 0.002,
) -> list[int]:
    """The feature ids of a ``group`` (or ``consistent``) detector fitted on ``sets``."""
    from steer.features.contrast import auroc

    pairs = _split(sets, "sae_max")
    if not consistent or len(pairs) == 1:
        pairs = [(torch.cat([p for p, _ in pairs]), torch.cat([n for _, n in pairs]))]
    # Only features that fire more on the positive class: a group fires on high activations.
    rank = torch.stack([auroc(p, n) for p, n in pairs]).min(dim=0).values
    order = [int(f) for f in rank.argsort(descending=True)[:candidates]]
    return _greedy(pairs, order, min_gain=min_gain)


def _group_detector(kind: str, ids: list[int]) -> Detector:
    cols = torch.tensor(ids)
    return Detector(
        kind=kind,
        score=lambda s: s.sae_max[:, cols].max(dim=1).values,
        n_features=len(ids),
        features=ids,
    )


def fit_detector(kind: str, sets: Sequence[EncodedSet], **options: Any) -> Detector:
    """Fit one detector ``kind`` (see :data:`KINDS`) on ``sets`` (pooled: their texts
    together). ``options``: ``l1`` (sparse kinds), ``l2`` (dense), ``candidates`` and
    ``min_gain`` (group kinds)."""
    if kind not in KINDS:
        raise SteerError(f"unknown detector {kind!r} (known: {', '.join(KINDS)})")
    if kind in ("group", "consistent"):
        ids = fit_group(
            sets,
            consistent=kind == "consistent",
            candidates=options.get("candidates", 64),
            min_gain=options.get("min_gain", 0.002),
        )
        return _group_detector(kind, ids)
    attr = "resid_mean" if kind == "dense" else "sae_max"
    pos = torch.cat([p for p, _ in _split(sets, attr)])
    neg = torch.cat([n for _, n in _split(sets, attr)])
    if kind == "dense":
        from steer.monitoring.probe import train_probe

        probe = train_probe(pos, neg, l2=options.get("l2", 1e-3))
        return Detector(
            kind=kind, score=lambda s: probe.logits(s.resid_mean), n_features=pos.shape[1]
        )
    from steer.monitoring.sparse import token_weights, train_sparse_probe

    probe = train_sparse_probe(pos, neg, l1=options.get("l1", 0.03))
    w, b = token_weights(probe)
    ids = [int(f) for f in torch.nonzero(w).flatten()]
    if kind == "sparse":
        score = lambda s: probe.logits(s.sae_max)  # noqa: E731
    else:
        score = lambda s: s.token_scores(w, b)  # noqa: E731
    return Detector(
        kind=kind,
        score=score,
        n_features=len(ids),
        features=ids,
        weights=[float(w[f]) for f in ids],
        bias=b,
    )
