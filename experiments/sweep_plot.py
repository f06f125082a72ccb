"""Plot an SAE sweep: explained variance and CE loss recovered against L0.

Each run is ``label=path`` where path is an ``eval.json`` written by
``experiments/train_first_sae.py`` or the output of ``steer sae eval --json``::

    python experiments/sweep_plot.py k16=/tmp/k16/eval.json k32=k32.json k64=/tmp/k64/eval.json \
        --out docs/sae-sweep

Writes ``<out>.png`` (two panels) and ``<out>.md`` (the table). Needs matplotlib, which is
not a dependency of steer itself: ``pip install matplotlib``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [
    ("l0", "L0", "{:.0f}"),
    ("explained_variance", "explained variance", "{:.3f}"),
    ("ce_loss_recovered", "CE loss recovered", "{:.3f}"),
    ("ce_loss_sae", "CE with SAE", "{:.3f}"),
    ("ce_loss_clean", "CE clean", "{:.3f}"),
    ("kl_sae", "KL to clean", "{:.3f}"),
    ("dead_fraction", "dead (eval)", "{:.2%}"),
    ("tokens", "eval tokens", "{:d}"),
]


def load_metrics(path: Path) -> dict:
    """The metrics of an ``eval.json`` (under ``metrics``) or of ``steer sae eval --json``."""
    data = json.loads(path.read_text())
    return data.get("metrics", data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="label=path/to/eval.json")
    parser.add_argument("--out", type=Path, default=Path("docs/sae-sweep"))
    parser.add_argument("--title", default="TopK SAEs, SmolLM2-135M-Instruct layer 12")
    args = parser.parse_args()

    runs = []
    for item in args.runs:
        label, _, path = item.partition("=")
        runs.append((label, load_metrics(Path(path))))
    runs.sort(key=lambda r: r[1]["l0"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for label, m in runs:
        cells = [fmt.format(m[key]) for key, _, fmt in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    l0 = [m["l0"] for _, m in runs]
    for ax, key, title, target in (
        (axes[0], "explained_variance", "explained variance", 0.85),
        (axes[1], "ce_loss_recovered", "CE loss recovered", 0.90),
    ):
        ax.plot(l0, [m[key] for _, m in runs], "o-")
        for (label, m), x in zip(runs, l0, strict=True):
            ax.annotate(label, (x, m[key]), textcoords="offset points", xytext=(5, -12))
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L0 (active features per token)")
        ax.set_ylabel(title)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
