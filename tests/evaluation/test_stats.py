"""Bootstrap intervals on known distributions, the pick/report split, and the strength picked
on one half with its score reported on the other."""

from __future__ import annotations

import math
import random

import pytest

from steer.errors import SteerError
from steer.evaluation.stats import bootstrap_ci, mean_at, pick_strength, split_halves
from steer.evaluation.summary import summarise


def test_bootstrap_interval_matches_the_normal_theory_on_a_known_distribution():
    rng = random.Random(1)
    values = [rng.gauss(5.0, 2.0) for _ in range(400)]
    est = bootstrap_ci(values, resamples=2000, seed=3)
    mean = sum(values) / len(values)
    assert est.mean == pytest.approx(mean)
    # The 95 % interval of a mean of 400 draws with sd 2: about +-1.96 * 2 / 20 = +-0.196.
    assert est.high - est.low == pytest.approx(2 * 1.96 * 2.0 / 20, rel=0.15)
    assert est.low < 5.0 < est.high and est.n == 400


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(0)
    covered = 0
    for trial in range(200):
        draws = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(60)]
        est = bootstrap_ci(draws, resamples=400, seed=trial)
        covered += est.low <= 0.3 <= est.high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_edge_cases():
    assert bootstrap_ci([2.0, 4.0], resamples=0).to_dict() == {
        "mean": 3.0,
        "low": 3.0,
        "high": 3.0,
        "n": 2,
    }
    assert bootstrap_ci([1.0]).low == 1.0
    with pytest.raises(SteerError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(SteerError, match="not a finite number"):
        bootstrap_ci([1.0, math.nan])


def test_split_halves_is_a_seeded_partition():
    pick, report = split_halves(11, seed=4)
    assert sorted(pick + report) == list(range(11)) and len(pick) == 5
    assert split_halves(11, seed=4) == (pick, report)
    assert split_halves(11, seed=5) != (pick, report)
    with pytest.raises(SteerError, match="at least 2 prompts"):
        split_halves(1)


def test_mean_at_skips_missing_values():
    assert mean_at([1.0, None, 3.0], [0, 1, 2]) == 2.0
    assert math.isnan(mean_at([None, None], [0, 1]))


def test_pick_strength_respects_the_fluency_limit_and_prefers_the_smaller_edit():
    pick = [0, 1]
    sweep = {
        1.0: {"score": [0.2, 0.2], "loss": [1.0, 1.0]},
        2.0: {"score": [0.6, 0.6], "loss": [1.5, 1.5]},
        3.0: {"score": [0.6, 0.6], "loss": [1.6, 1.6]},  # as good, larger: not picked
        4.0: {"score": [1.0, 1.0], "loss": [3.0, 3.0]},  # best score, ppl ratio e^2 > 2
    }
    assert pick_strength(sweep, pick, reference_loss=1.0, max_ppl_ratio=2.0) == 2.0
    assert pick_strength(sweep, pick, reference_loss=1.0, max_ppl_ratio=10.0) == 4.0
    # nothing fluent enough: the lowest strength
    assert pick_strength(sweep, pick, reference_loss=-5.0, max_ppl_ratio=1.5) == 1.0


def record(family, strength, scores, loss=None):
    n = len(scores)
    return {
        "family": family,
        "strength": strength,
        "outputs": [[f"{family} {i}" for i in range(n)]],
        "loss": [loss or [1.0] * n],
        "kl": [0.0, 0.0],
        "mc": [1.0, 0.0],
        "new_tokens": 10,
        "seconds": 1.0,
        "scores": {"lexicon": [scores]},
    }


def test_the_strength_is_picked_on_one_half_and_reported_on_the_other():
    n = 8
    pick, report = split_halves(n, seed=0)
    # Strength 2 wins on the pick half and scores 0 on the report half; strength 1 the reverse.
    s2 = [1.0 if i in pick else 0.0 for i in range(n)]
    s1 = [0.0 if i in pick else 1.0 for i in range(n)]
    records = {
        "none": record("none", None, [0.0] * n),
        "prompt": record("prompt", None, [0.5] * n),
        "recipe@1": record("recipe", 1.0, s1),
        "recipe@2": record("recipe", 2.0, s2),
    }
    result = summarise(records, ["lexicon"], prompts=[str(i) for i in range(n)], max_ppl_ratio=2)
    assert result["picked"] == {"recipe": 2.0}
    row = next(r for r in result["table"] if r["family"] == "recipe")
    assert row["arm"] == "recipe@2" and row["pick_score"] == 1.0
    # reported on the other half: the sweep's maximum (1.0 for either) is not what is shown
    assert row["scores"]["lexicon"]["mean"] == 0.0
    assert [r["arm"] for r in result["table"]] == ["none", "prompt", "recipe@2"]
    assert result["arms"]["recipe@1"]["scores"]["lexicon"]["mean"] == 1.0
    assert result["split"]["report"] == report
