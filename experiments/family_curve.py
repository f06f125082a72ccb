"""Plot the SAE family's held-out explained variance against tokens seen, and extrapolate.

Reads the ``curve-L<n>.json`` files ``train_sae_family.py`` writes (held-out EV measured along
training) and each layer's ``eval.json``; fits ``EV(t) = a - b * t^-c`` per layer (a power law
approaching a ceiling ``a``; least squares on the points after the first) and reports the
tokens at which the fit reaches ``--target`` EV (or that its ceiling is below it). Writes
``<out>.png`` and ``<out>.md`` (the table):

    python experiments/family_curve.py --work /tmp/steer-family --out docs/sae-family

Needs matplotlib (in steer's test extra). The extrapolation is a fit to at most eight points
of one run per layer with a decaying learning rate: read it as an order of magnitude.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def fit_power_law(tokens: np.ndarray, ev: np.ndarray) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``ev ~ a - b * tokens^-c``: a grid over the ceiling ``a``, a straight
    line in log-log space for the rest, the least-squares best."""
    best = (float("inf"), 1.0, 0.0, 0.0)
    t = np.log(tokens)
    for a in np.linspace(ev.max() + 1e-4, 1.0, 400):
        y = np.log(a - ev)
        slope, intercept = np.polyfit(t, y, 1)
        err = float(((slope * t + intercept - y) ** 2).sum())
        if err < best[0] and slope < 0:
            best = (err, float(a), float(np.exp(intercept)), float(-slope))
    return best[1], best[2], best[3]


def tokens_for(target: float, a: float, b: float, c: float) -> float | None:
    """Tokens at which the fit reaches ``target``; None when its ceiling is below it."""
    if target >= a or c <= 0:
        return None
    return float((b / (a - target)) ** (1.0 / c))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/steer-family", help="train_sae_family.py's --work.")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24])
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--out", default="/tmp/sae-family", help="Writes OUT.png and OUT.md.")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(args.work)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = []
    for layer in args.layers:
        curve = json.loads((work / f"curve-L{layer}.json").read_text())
        tokens = np.array([p["tokens"] for p in curve], dtype=float)
        ev = np.array([p["held_out_ev"] for p in curve])
        a, b, c = fit_power_law(tokens[1:], ev[1:])
        need = tokens_for(args.target, a, b, c)
        (line,) = ax.plot(tokens / 1e6, ev, "o-", label=f"layer {layer}")
        grid = np.geomspace(tokens[1], max(tokens[-1] * 8, need or 0) if need else tokens[-1] * 8)
        ax.plot(grid / 1e6, a - b * grid**-c, ":", color=line.get_color())
        metrics = json.loads((work / f"L{layer}" / "sae" / "eval.json").read_text())["metrics"]
        rows.append((layer, tokens[-1], ev[-1], metrics, a, need))
    ax.axhline(args.target, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("held-out explained variance")
    ax.set_title("SmolLM2-135M TopK SAEs (8,192 x k=64): EV along training, fits dotted")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    lines = [
        "| layer | tokens seen | held-out EV (curve) | EV (eval) | CE loss recovered | "
        f"fit ceiling | tokens to EV {args.target:g} (fit) |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer, seen, ev_last, m, a, need in rows:
        reach = (
            "reached"
            if ev_last >= args.target
            else (f"~{need / 1e6:,.0f}M" if need else "above the ceiling")
        )
        lines.append(
            f"| {layer} | {seen / 1e6:.1f}M | {ev_last:.3f} | {m['explained_variance']:.3f} | "
            f"{m['ce_loss_recovered']:.3f} | {a:.3f} | {reach} |"
        )
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
