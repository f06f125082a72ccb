"""Bootstrap confidence intervals and the split that keeps strength selection honest."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from steer.errors import SteerError


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """``{"mean", "low", "high", "n"}``, rounded for JSON."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in vars(self).items()}


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """The mean of ``values`` and its percentile bootstrap interval at ``level``.

    Each value is one unit of resampling (a prompt, with its seeds already averaged), so the
    interval is over prompts. ``resamples=0`` gives the mean with a zero-width interval.
    Non-finite values are a SteerError: a NaN would silently poison every resample.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise SteerError("no values to estimate a mean from")
    if not all(math.isfinite(v) for v in vals):
        raise SteerError("a value to average is not a finite number")
    mean = sum(vals) / len(vals)
    if resamples <= 0 or len(vals) == 1:
        return Estimate(mean, mean, mean, len(vals))
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(rng.choices(vals, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = means[max(0, math.floor(tail * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return Estimate(mean, low, high, n)


def split_halves(n: int, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(pick, report)``: the indices ``0..n-1`` shuffled with ``seed`` and cut in two
    halves. A strength is picked on the first and its score reported on the second (as
    AxBench does), so the reported score is not the maximum of a noisy sweep."""
    if n < 2:
        raise SteerError(f"need at least 2 prompts to pick a strength on one half (got {n})")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    half = n // 2
    return sorted(order[:half]), sorted(order[half:])


def mean_at(values: Sequence[float | None], indices: Sequence[int]) -> float:
    """The mean of ``values`` at ``indices``, skipping ``None`` (an empty completion has no
    loss); NaN when every one is ``None``."""
    known = [values[i] for i in indices if values[i] is not None]
    return sum(known) / len(known) if known else math.nan


def pick_strength(
    sweep: dict[float, dict[str, list[float]]],
    pick: Sequence[int],
    *,
    reference_loss: float,
    max_ppl_ratio: float,
) -> float:
    """The strength of ``sweep`` (strength -> per-prompt ``score`` and ``loss``) with the best
    mean score on the ``pick`` prompts among those whose perplexity ratio there (``exp`` of
    mean loss minus ``reference_loss``, the unsteered arm's on the same prompts) is at most
    ``max_ppl_ratio``; the lowest strength when none is fluent enough. Ties go to the lower
    strength: the smaller edit that does as well."""
    fluent = [
        s
        for s in sorted(sweep)
        if math.exp(mean_at(sweep[s]["loss"], pick) - reference_loss) <= max_ppl_ratio
        # NaN (no scorable completion) compares false: never picked as fluent
    ]
    if not fluent:
        return min(sweep)
    return max(fluent, key=lambda s: (mean_at(sweep[s]["score"], pick), -s))
