"""Monitor thresholds: the max-F1 cut (never inside a tie), the FPR quantile, the rates at a
threshold and the one-score AUROC, on small hand-made scores worked out by hand."""

from __future__ import annotations

import pytest
import torch

from steer.monitoring.thresholds import (
    fpr_threshold,
    max_f1_threshold,
    metrics_at_threshold,
    score_auroc,
)

# Ranked: 0.9+ 0.8+ 0.7- 0.4+ 0.3- 0.2- 0.1-. Firing on the top 4 (score > 0.3) catches all
# 3 positives with 1 false alarm: F1 = 2*3 / (2*3 + 1 + 0) = 6/7, the best cut.
POS = torch.tensor([0.9, 0.8, 0.4])
NEG = torch.tensor([0.7, 0.3, 0.2, 0.1])


def test_max_f1_threshold_picks_the_best_cut():
    thr, f1 = max_f1_threshold(POS, NEG)
    assert thr == pytest.approx(0.3)
    assert f1 == pytest.approx(6 / 7)


def test_max_f1_threshold_never_cuts_inside_a_tie():
    # Cutting after the first or second 1.0 would give F1 1.0 on paper, but no threshold can
    # separate equal scores: the best real cut fires on all three 1.0s (TP 2, FP 1): 0.8.
    thr, f1 = max_f1_threshold(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert thr == 0.0
    assert f1 == pytest.approx(0.8)


def test_max_f1_threshold_on_separable_scores_and_firing_on_everything():
    assert max_f1_threshold(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])) == (1.0, 1.0)
    # Every score equal: the only cut fires on all, just under the lowest score.
    thr, f1 = max_f1_threshold(torch.tensor([5.0]), torch.tensor([5.0]))
    assert thr == pytest.approx(5.0 - 1e-6)
    assert f1 == pytest.approx(2 / 3)


def test_max_f1_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="at least one positive"):
        max_f1_threshold(torch.tensor([]), NEG)


def test_fpr_threshold_is_the_negative_quantile():
    neg = torch.arange(101, dtype=torch.float32)  # 0, 1, ..., 100
    thr = fpr_threshold(neg, 0.05)
    assert thr == pytest.approx(95.0)
    assert int((neg > thr).sum()) == 5
    # Few negatives: interpolated between 8 and 9, so one of ten (10 %) lies above.
    assert fpr_threshold(torch.arange(10, dtype=torch.float32), 0.05) == pytest.approx(8.55)


def test_metrics_at_threshold_counts_equal_scores_as_not_firing():
    # score > 0.3: all 3 positives, and 0.7 of the negatives (0.3 itself does not fire).
    assert metrics_at_threshold(POS, NEG, 0.3) == {
        "tpr": 1.0,
        "fpr": 0.25,
        "precision": 0.75,
        "f1": 0.8571,
    }
    # score > 0.75: 0.9 and 0.8 only.
    assert metrics_at_threshold(POS, NEG, 0.75) == {
        "tpr": 0.6667,
        "fpr": 0.0,
        "precision": 1.0,
        "f1": 0.8,
    }


def test_metrics_at_threshold_when_nothing_fires():
    assert metrics_at_threshold(POS, NEG, 1.0) == {
        "tpr": 0.0,
        "fpr": 0.0,
        "precision": 0.0,
        "f1": 0.0,
    }


def test_score_auroc_counts_pairs_and_halves_ties():
    # 11 of the 12 (pos, neg) pairs are ordered right: only 0.4 < 0.7 is not.
    assert score_auroc(POS, NEG) == pytest.approx(11 / 12)
    assert score_auroc(torch.tensor([1.0]), torch.tensor([1.0])) == pytest.approx(0.5)
    assert score_auroc(torch.tensor([0.0, 0.1]), torch.tensor([2.0])) == 0.0
