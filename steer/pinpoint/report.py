"""Pinpoint outputs: a rich table, the JSON file, the curve as PNG and as a self-contained HTML
page (inline SVG), and a steering recipe that ablates the chosen features.

All files are written atomically (:mod:`steer.io`).
"""

from __future__ import annotations

import html
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from steer.io import atomic_files

COLORS = {"features": "#1f77b4", "neurons": "#ff7f0e"}


def print_report(result: dict[str, Any], console: Any, *, rows: int = 20) -> None:
    """Ranked tables (feature, label, attribution, verified effect) and a summary per site."""
    from rich.table import Table

    console.print(
        f"metric {result['metric']}: clean mean {result['clean_metric']:.3f} over "
        f"{result['n_prompts']} prompts; method {result['method']}, ablation {result['ablation']}",
        highlight=False,
        soft_wrap=True,
    )
    for site in result["sites"]:
        for kind in ("features", "neurons"):
            if kind not in site:
                continue
            part = site[kind]
            has_labels = any(r["label"] for r in part["ranked"])
            table = Table(title=f"{site['sae']} (layer {site['layer']}): top {kind}")
            table.add_column("rank", justify="right")
            table.add_column(kind[:-1])
            if has_labels:
                table.add_column("label")
            table.add_column("attribution", justify="right")
            table.add_column("verified effect", justify="right")
            for r in part["ranked"][:rows]:
                label = [r["label"] or ""] if has_labels else []
                table.add_row(
                    str(r["rank"]),
                    str(r["node"]),
                    *label,
                    f"{r['attribution']:+.4f}",
                    f"{r['verified_effect']:+.4f}",
                )
            console.print(table)
            console.print(_summary_line(site, kind), highlight=False, soft_wrap=True)


def _summary_line(site: dict[str, Any], kind: str) -> str:
    part = site[kind]
    corr = part["correlation"]
    pearson = "n/a" if corr["pearson"] is None else f"{corr['pearson']:.3f}"
    spearman = "n/a" if corr["spearman"] is None else f"{corr['spearman']:.3f}"
    half = part["n_for_half"]
    half_text = f"{half}" if half is not None else f"> {part['curve'][-1]['n']} (not reached)"
    line = (
        f"  {kind}: {half_text} ablated to remove 50% of the metric; attribution vs verified "
        f"effect (top {corr['n']}): pearson {pearson}, spearman {spearman}"
    )
    if part.get("error_attribution") is not None:
        line += f"; SAE error node {part['error_attribution']:+.4f}"
    for se in part.get("side_effects", []):
        line += f"\n    loss on unrelated text, top {se['n']} ablated: {se['ce']:.4f} ({se['delta']:+.4f})"
    return line


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    """Write ``pinpoint.json``, ``curve.html`` and (with matplotlib) ``curve.png`` into ``out``
    as one set: a failure (a full disk) leaves the earlier set as it was. Returns the paths."""
    out = Path(out)
    names = ["pinpoint.json", "curve.html"]
    if importlib.util.find_spec("matplotlib") is not None:
        names.append("curve.png")
    with atomic_files(out, names) as tmp:
        tmp["pinpoint.json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp["curve.html"].write_text(curve_html(result), encoding="utf-8")
        if "curve.png" in tmp:
            write_png(result, tmp["curve.png"])
    return [out / name for name in names]


def _series(site: dict[str, Any]) -> list[tuple[str, list[tuple[float, float]]]]:
    return [
        (kind, [(p["n"], p["metric"]) for p in site[kind]["curve"]])
        for kind in ("features", "neurons")
        if kind in site
    ]


def write_png(result: dict[str, Any], path: Path) -> bool:
    """The curve as a PNG at ``path`` (written in place: callers make it atomic); ``False``
    (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sites = result["sites"]
    fig, axes = plt.subplots(1, len(sites), figsize=(6 * len(sites), 4), squeeze=False)
    for ax, site in zip(axes[0], sites, strict=True):
        for kind, points in _series(site):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=".", color=COLORS[kind], label=kind)
        ax.axhline(result["clean_metric"] * 0.5, color="grey", ls="--", lw=1, label="50% of clean")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("number of ablated nodes (top-ranked first)")
        ax.set_ylabel("metric, mean over prompts")
        ax.set_title(f"{site['sae']} (layer {site['layer']})")
        ax.legend()
    fig.suptitle(result["metric"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return True


def curve_svg(result: dict[str, Any], site: dict[str, Any], *, width=640, height=360) -> str:
    """One site's curve as an inline SVG (no external assets)."""
    left, right, top, bottom = 70, 20, 30, 50
    series = _series(site)
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts] + [0.0, result["clean_metric"] * 0.5]
    x0, x1 = 0.0, max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#888"/>',
    ]
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        parts.append(
            f'<text x="{px(xv):.1f}" y="{height - bottom + 16}" text-anchor="middle">{xv:.0f}</text>'
        )
        parts.append(f'<text x="{left - 6}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.2f}</text>')
    half = result["clean_metric"] * 0.5
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{py(half):.1f}" y2="{py(half):.1f}" '
        'stroke="grey" stroke-dasharray="5,4"/>'
    )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{py(0):.1f}" y2="{py(0):.1f}" '
        'stroke="black" stroke-width="0.5"/>'
    )
    for i, (kind, points) in enumerate(series):
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline fill="none" stroke="{COLORS[kind]}" stroke-width="2" points="{coords}"/>'
        )
        parts.append(
            f'<text x="{width - right - 8}" y="{top + 16 + 16 * i}" text-anchor="end" '
            f'fill="{COLORS[kind]}">{kind}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">'
        "number of ablated nodes (top-ranked first)</text>"
    )
    parts.append(
        f'<text x="{left}" y="{top - 10}">{html.escape(result["metric"])} '
        "(dashed: 50% of clean)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def curve_html(result: dict[str, Any]) -> str:
    """A self-contained HTML page with one curve per site and the summary lines."""
    body = []
    for site in result["sites"]:
        body.append(f"<h2>{html.escape(site['sae'])} (layer {site['layer']})</h2>")
        body.append(curve_svg(result, site))
        lines = [_summary_line(site, k) for k in ("features", "neurons") if k in site]
        body.append(f"<pre>{html.escape(chr(10).join(lines))}</pre>")
    title = f"steer pinpoint: {result['metric']}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>\n<p>clean mean {result['clean_metric']:.3f} over "
        f"{result['n_prompts']} prompts; method {html.escape(result['method'])}, ablation "
        f"{html.escape(result['ablation'])}</p>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def steering_recipe(recipe: Any, result: dict[str, Any], *, n: int | None = None) -> str:
    """A ``steer run`` recipe (YAML) that zero-ablates the pinpointed features of every SAE:
    the top ``n`` (at most the ranked ``max(top_k, curve_max)``), or as many as removed half of
    the metric (else the top-k)."""
    from steer.steering.recipe import parse_recipe

    interventions = []
    for site in result["sites"]:
        part = site["features"]
        count = n or part["n_for_half"] or len(part["ranked"])
        interventions.append(
            {"plugin": "ablate", "sae": site["sae"], "features": part["order"][:count]}
        )
    data = {
        "model": recipe.model,
        "saes": [s.model_dump(exclude_none=True) for s in recipe.saes],
        "generation": {"max_new_tokens": 20, "temperature": 0, "chat": recipe.chat},
        "prompts": [p.text for p in recipe.prompts[:5]],
        "interventions": interventions,
    }
    parse_recipe(data)  # what we write must be a valid steering recipe
    header = (
        f"# Written by `steer pinpoint`: zero-ablates the features that drive {result['metric']}\n"
        f"# (clean mean {result['clean_metric']:.3f}; method {result['method']}, "
        f"ablation {result['ablation']}).\n"
    )
    if result["ablation"] != "zero":
        header += "# Pinpointed with mean/counterfactual patching; `ablate` sets features to 0.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
