"""Choosing and judging a monitor's threshold from scores on labelled texts.

A monitor fires when its score is strictly above its threshold (``score > threshold``), so
every function here counts a score equal to the threshold as not firing. ``pos`` holds the
scores of texts the monitor should fire on, ``neg`` those it should not; both are 1-D tensors.
"""

from __future__ import annotations

import torch

from steer.features.contrast import auroc


def score_auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """AUROC of one score (1.0: every positive above every negative, 0.5: chance; ties count
    half), computed exactly by :func:`steer.features.contrast.auroc`."""
    return float(auroc(pos[:, None], neg[:, None]))


def max_f1_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float]:
    """``(threshold, F1)`` at the threshold that maximises the F1 of ``score > threshold``.

    The threshold is always one of the scores (the next lower one below the cut), or just under
    the lowest score when firing on everything is best; it never falls between tied scores,
    since a cut through a tie cannot be realised by any threshold.
    """
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("a threshold needs at least one positive and one negative score")
    scores = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
    order = scores.argsort(descending=True)
    s, y = scores[order], labels[order]
    # Cutting after position i fires on the top i + 1 scores: F1 = 2 TP / (TP + FP + P).
    tp = y.cumsum(0)
    fp = (1 - y).cumsum(0)
    f1 = 2 * tp / (tp + fp + len(pos))
    distinct = torch.ones_like(s, dtype=torch.bool)
    distinct[:-1] = s[:-1] != s[1:]
    f1 = torch.where(distinct, f1, torch.zeros_like(f1))
    i = int(f1.argmax())
    thr = float(s[i + 1]) if i + 1 < len(s) else float(s[i]) - 1e-6
    return thr, float(f1[i])


def fpr_threshold(neg: torch.Tensor, fpr: float) -> float:
    """The ``1 - fpr`` quantile of the negative scores (linearly interpolated): about ``fpr`` of
    them lie above it. Only about: with few negatives the share above rounds to whole texts
    (10 negatives and ``fpr=0.05`` leave one of them, 10 %, above)."""
    return float(torch.quantile(neg.double(), 1 - fpr))


def metrics_at_threshold(pos: torch.Tensor, neg: torch.Tensor, threshold: float) -> dict:
    """True- and false-positive rates, precision and F1 of ``score > threshold``, rounded to
    4 places (precision and F1 are 0.0 when nothing fires)."""
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("rates need at least one positive and one negative score")
    tp, fn = int((pos > threshold).sum()), int((pos <= threshold).sum())
    fp, tn = int((neg > threshold).sum()), int((neg <= threshold).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn)
    return {
        "tpr": round(rec, 4),
        "fpr": round(fp / (fp + tn), 4),
        "precision": round(prec, 4),
        "f1": round(2 * prec * rec / (prec + rec) if prec + rec else 0.0, 4),
    }
