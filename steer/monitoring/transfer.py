"""Cross-distribution evaluation: fit a detector on some labelled sets, judge it on another.

Every set is split once, seeded and per class, into a fit half and a test half; every
detector is judged on test halves only, so each row below reads the same test texts:

* ``within``: fitted on the set's own fit half (the in-distribution number);
* ``held-out``: fitted on the fit halves of every *other* set (leave one dataset out);
* ``single`` (optional): fitted on one other set's fit half.

Per row: AUROC with a percentile bootstrap CI (positives and negatives resampled apart),
the TPR and precision at the threshold where the test set's own false-positive rate is
``fpr``, and the threshold chosen on the fit distribution (the ``1 - fpr`` quantile of the
negatives of the fit sets' test halves, which the fit never saw) carried over to the test
set, with the TPR, FPR and precision it gives there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steer.errors import SteerError
from steer.monitoring.detectors import KINDS, fit_detector
from steer.monitoring.labelled import EncodedSet, check_classes
from steer.monitoring.thresholds import fpr_threshold, metrics_at_threshold, score_auroc

# Each half must hold two texts of each class: a set needs four per class to be split.
MIN_PER_CLASS_TO_SPLIT = 4


def bootstrap_auroc(
    pos: torch.Tensor, neg: torch.Tensor, *, n_boot: int = 1000, seed: int = 0, level=0.95
) -> tuple[float, float]:
    """A percentile bootstrap CI of the AUROC of ``pos`` against ``neg`` scores: each
    resample draws the positives and the negatives apart, with replacement (``n_boot`` 0:
    the interval is the point itself)."""
    point = score_auroc(pos, neg)
    if n_boot == 0:
        return point, point
    # AUROC of a resample = counts_pos' C counts_neg / (P N), with C[i, j] = 1 when
    # positive i outscores negative j and 1/2 on a tie: one matrix, then only counts.
    c = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    gen = torch.Generator().manual_seed(seed)
    p, n = len(pos), len(neg)
    vals = []
    for start in range(0, n_boot, 100):
        b = min(100, n_boot - start)
        ip = torch.randint(p, (b, p), generator=gen)
        jn = torch.randint(n, (b, n), generator=gen)
        cp = torch.zeros(b, p, dtype=torch.float64).scatter_add_(1, ip, torch.ones(b, p).double())
        cn = torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, jn, torch.ones(b, n).double())
        vals.append(((cp @ c) * cn).sum(dim=1) / (p * n))
    allv = torch.cat(vals)
    tail = (1 - level) / 2
    lo, hi = torch.quantile(allv, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(lo), float(hi)


def split_set(enc: EncodedSet, name: str, *, seed: int = 0) -> tuple[EncodedSet, EncodedSet]:
    """``(fit half, test half)`` of a set: each class shuffled (seeded) and cut in two, the
    odd text to the test half. Too few texts of a class is a one-line :class:`SteerError`."""
    check_classes(
        name, int(enc.labels.sum()), int((~enc.labels).sum()), minimum=MIN_PER_CLASS_TO_SPLIT
    )
    gen = torch.Generator().manual_seed(seed)
    fit = torch.zeros(len(enc.labels), dtype=torch.bool)
    for cls in (True, False):
        idx = torch.nonzero(enc.labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fit[idx[: len(idx) // 2]] = True
    return enc.subset(fit), enc.subset(~fit)


@dataclass
class Row:
    """One detector, fitted on ``fit`` and judged on the test half of ``test``."""

    kind: str
    mode: str  # within | held-out | single
    fit: list[str]
    test: str
    n_pos: int
    n_neg: int
    auroc: float
    ci: tuple[float, float]
    n_features: int
    at_fpr: dict[str, float]  # the test set's own fpr threshold: tpr, fpr, precision, f1
    transferred: dict[str, float]  # the fit data's fpr threshold: threshold, tpr, fpr, ...

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready values (4 decimals)."""
        return {
            "kind": self.kind,
            "mode": self.mode,
            "fit": self.fit,
            "test": self.test,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "auroc": round(self.auroc, 4),
            "ci": [round(self.ci[0], 4), round(self.ci[1], 4)],
            "n_features": self.n_features,
            "at_fpr": self.at_fpr,
            "transferred": self.transferred,
        }


def judge(
    detector, calib: Sequence[EncodedSet], test: EncodedSet, *, fpr: float, n_boot: int, seed
) -> dict[str, Any]:
    """AUROC, CI and the two threshold readings of a fitted ``detector`` on ``test``; the
    carried-over threshold is chosen on the negatives of the ``calib`` sets."""
    s = detector.score(test)
    pos, neg = s[test.labels], s[~test.labels]
    fit_neg = torch.cat([detector.score(f)[~f.labels] for f in calib])
    thr = fpr_threshold(fit_neg, fpr)
    own = fpr_threshold(neg, fpr)
    return {
        "n_pos": len(pos),
        "n_neg": len(neg),
        "auroc": score_auroc(pos, neg),
        "ci": bootstrap_auroc(pos, neg, n_boot=n_boot, seed=seed),
        "n_features": detector.n_features,
        "at_fpr": metrics_at_threshold(pos, neg, own),
        "transferred": {"threshold": round(thr, 4), **metrics_at_threshold(pos, neg, thr)},
    }


def cross_evaluate(
    sets: dict[str, EncodedSet],
    *,
    kinds: Sequence[str] = KINDS,
    fpr: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    single: bool = False,
    within: bool = True,
    progress: Any = None,
    **options: Any,
) -> list[Row]:
    """Every row (see the module docstring) for every detector of ``kinds`` on ``sets``
    (two at least). ``within=False``: no split and no ``within`` rows; each set is held out
    whole and the others are fitted on whole. ``progress(label)`` is called before each
    fit; ``options`` go to :func:`~steer.monitoring.detectors.fit_detector`."""
    if len(sets) < 2:
        raise SteerError("cross-distribution evaluation needs at least two labelled sets")
    if not 0 < fpr < 1:
        raise SteerError(f"the false-positive rate must be between 0 and 1 (got {fpr})")
    if within:
        halves = {name: split_set(enc, name, seed=seed) for name, enc in sets.items()}
    else:
        halves = {name: (enc, enc) for name, enc in sets.items()}
    plans: list[tuple[str, list[str], str]] = []
    for test in sets:
        if within:
            plans.append(("within", [test], test))
        plans.append(("held-out", [n for n in sets if n != test], test))
        if single and len(sets) > 2:
            plans += [("single", [n], test) for n in sets if n != test]
    rows = []
    for kind in kinds:
        fitted: dict[tuple[str, ...], Any] = {}
        for mode, fit_names, test in plans:
            key = tuple(fit_names)
            if key not in fitted:
                if progress is not None:
                    progress(f"{kind} on {' + '.join(fit_names)}")
                fitted[key] = fit_detector(kind, [halves[n][0] for n in fit_names], **options)
            # The threshold is carried over from the fit sets' test halves: data from the
            # fit distribution that the fit never saw (a probe separates its own fit texts
            # almost perfectly, so their scores would put the threshold far too low). A
            # within row has only its own fit half to choose on.
            calib = 0 if mode == "within" or not within else 1
            res = judge(
                fitted[key],
                [halves[n][calib] for n in fit_names],
                halves[test][1],
                fpr=fpr,
                n_boot=n_boot,
                seed=seed,
            )
            rows.append(Row(kind=kind, mode=mode, fit=fit_names, test=test, **res))
    return rows


def table(rows: Sequence[Row], *, kinds: Sequence[str] | None = None) -> str:
    """A markdown table of held-out AUROC (CI) per test set (rows) and kind (columns), the
    within-set AUROC beside it, and a last row with each kind's mean held-out AUROC."""
    kinds = list(kinds or dict.fromkeys(r.kind for r in rows))
    tests = list(dict.fromkeys(r.test for r in rows))
    get = {(r.kind, r.mode, r.test): r for r in rows}
    head = "| held-out set | " + " | ".join(kinds) + " |"
    lines = [head, "|---" * (len(kinds) + 1) + "|"]
    for t in tests:
        cells = []
        for k in kinds:
            h, w = get.get((k, "held-out", t)), get.get((k, "within", t))
            if h is None:
                cells.append("")
                continue
            cell = f"{h.auroc:.3f} [{h.ci[0]:.2f}, {h.ci[1]:.2f}]"
            cells.append(cell + (f" (within {w.auroc:.3f})" if w is not None else ""))
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    means = []
    for k in kinds:
        vals = [r.auroc for r in rows if r.kind == k and r.mode == "held-out"]
        means.append(f"**{sum(vals) / len(vals):.3f}**" if vals else "")
    lines.append("| mean held-out | " + " | ".join(means) + " |")
    return "\n".join(lines)
