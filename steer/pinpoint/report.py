"""Pinpoint outputs: a rich table, the JSON file, the curve as PNG and as a self-contained HTML
page (inline SVG), and a steering recipe that ablates the chosen features.

All files are written atomically (:mod:`steer.io`).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import yaml

from steer.errors import SteerError
from steer.html import FeatureLinks, esc, feature_link
from steer.io import atomic_files

COLORS = {"features": "#1f77b4", "neurons": "#ff7f0e", "pca": "#2ca02c", "ica": "#9467bd"}
# The bases a result may hold, in the order they are shown, and what one node of each is called.
KINDS = ("features", "neurons", "pca", "ica")
NODE_NAMES = {"features": "feature", "neurons": "neuron", "pca": "component", "ica": "component"}
PAGE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; margin: 0 auto; max-width: 1320px;
  padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.35rem; margin: .5rem 0; } h2 { font-size: 1.1rem; margin: 1rem 0 .5rem; }
h3 { font-size: .95rem; margin: .2rem 0 .3rem; }
.meta { color: #6e6e73; margin: 0 0 .5rem; }
.row { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
figure { margin: 0; }
.tables { flex: 1; min-width: 360px; }
.scroll { max-height: 300px; overflow: auto; border: 1px solid #e3e3e8; border-radius: 4px;
  margin-bottom: .75rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #eee; }
th { background: #f6f6f8; position: sticky; top: 0; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.label { color: #0a7d5a; }
a { color: #0b57d0; text-decoration: none; } a:hover { text-decoration: underline; }
pre.summary { white-space: pre-wrap; font-size: 12.5px; color: #333; }
svg .grid { stroke: #eee; } svg .tick { fill: #444; font-size: 11px; }
svg .axis-title { font-size: 12.5px; } svg .legend { font-size: 12px; }
svg circle:hover { r: 5; }
"""


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
        for kind in KINDS:
            if kind not in site:
                continue
            part = site[kind]
            has_labels = any(r["label"] for r in part["ranked"])
            table = Table(title=f"{site['sae']} (layer {site['layer']}): top {kind}")
            table.add_column("rank", justify="right")
            table.add_column(NODE_NAMES[kind])
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


OUTPUT_NAMES = ("pinpoint.json", "curve.html", "curve.png")
_RESULT_KEYS = {"metric", "clean_metric", "sites"}  # what marks pinpoint.json as ours


def check_output_folder(out: Path) -> None:
    """Refuse, before any work, an ``--out`` folder where writing would replace files steer did
    not write: ``pinpoint.json``, ``curve.html`` or ``curve.png`` are replaced only beside a
    ``pinpoint.json`` that holds an earlier pinpoint result. Other files are never touched."""
    out = Path(out)
    present = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if not present:
        return
    try:
        earlier = json.loads((out / "pinpoint.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and set(earlier) >= _RESULT_KEYS):
        raise SteerError(
            f"holds {present[0]}, which steer pinpoint did not write (no earlier pinpoint.json "
            "beside it); give --out another folder",
            where=str(out),
        )


def write_outputs(
    result: dict[str, Any], out: Path, *, links: dict[str, FeatureLinks] | None = None
) -> list[Path]:
    """Write ``pinpoint.json``, ``curve.html`` and (with matplotlib) ``curve.png`` into ``out``
    as one set: a failure (a full disk) leaves the earlier set as it was. Returns the paths.
    ``links`` (by SAE id, from `steer.sae.sources.dashboard_links` for ``out``) link the features of
    ``curve.html`` to their dashboard pages."""
    out = Path(out)
    names = list(OUTPUT_NAMES[:2])
    if importlib.util.find_spec("matplotlib") is not None:
        names.append("curve.png")
    with atomic_files(out, names) as tmp:
        tmp["pinpoint.json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp["curve.html"].write_text(curve_html(result, links=links), encoding="utf-8")
        if "curve.png" in tmp:
            write_png(result, tmp["curve.png"])
    return [out / name for name in names]


def _series(site: dict[str, Any]) -> list[tuple[str, list[tuple[float, float]]]]:
    return [
        (kind, [(p["n"], p["metric"]) for p in site[kind]["curve"]])
        for kind in KINDS
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


def nice_ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering
    ``[lo, hi]``: the first at or below ``lo``, the last at or above ``hi``."""
    raw = (hi - lo) / n if hi > lo else (abs(hi) or 1.0) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, max(last, first + 1) + 1)]


def _fmt_tick(value: float, ticks: list[float]) -> str:
    # As many decimals as the step between ticks needs (0.25 -> 2, 2.5 -> 1, 5 -> 0).
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = next(d for d in range(7) if d == 6 or round(step, d) == round(step, 10))
    return f"{value:.{digits}f}"


def curve_svg(result: dict[str, Any], site: dict[str, Any], *, width=640, height=400) -> str:
    """One site's curve as an inline SVG (no external assets): the metric against the number
    of ablated nodes, with axis titles, ticks with values, the 50 % line labelled, each point's
    values on hover and where each kind removed half of the metric."""
    left, right, top, bottom = 72, 20, 34, 56
    clean, series = result["clean_metric"], _series(site)
    half = clean * 0.5
    x_max = max([x for _, pts in series for x, _ in pts], default=1.0)
    xt = nice_ticks(0.0, x_max, 6, integer=True)
    ys = [y for _, pts in series for _, y in pts] + [0.0, half, clean]
    yt = nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / ((y1 - y0) or 1) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="curve" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img">'
    ]
    for x in xt:
        parts.append(
            f'<line class="grid" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" '
            f'y2="{height - bottom}"/><text class="tick x" x="{px(x):.1f}" '
            f'y="{height - bottom + 16}" text-anchor="middle">{_fmt_tick(x, xt)}</text>'
        )
    for y in yt:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py(y):.1f}" '
            f'y2="{py(y):.1f}"/><text class="tick y" x="{left - 6}" y="{py(y) + 4:.1f}" '
            f'text-anchor="end">{_fmt_tick(y, yt)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#888"/>'
        f'<line x1="{left}" x2="{width - right}" y1="{py(0):.1f}" y2="{py(0):.1f}" '
        'stroke="black" stroke-width="0.6"/>'
        f'<line class="half" x1="{left}" x2="{width - right}" y1="{py(half):.1f}" '
        f'y2="{py(half):.1f}" stroke="#555" stroke-dasharray="6,4"/>'
        f'<text class="half-label" x="{width - right - 6}" y="{py(half) - 5:.1f}" '
        f'text-anchor="end" fill="#555">50 % of clean ({half:.3g})</text>'
    )
    for i, (kind, points) in enumerate(series):
        box = (left, top, height - bottom)
        parts += _series_svg(kind, points, site[kind].get("n_for_half"), px, py, i, box)
    parts.append(
        f'<text class="axis-title" x="{(left + width - right) / 2}" y="{height - 16}" '
        'text-anchor="middle">number of nodes ablated together (top-ranked first)</text>'
        f'<text class="axis-title" transform="translate(18 {(top + height - bottom) / 2}) '
        'rotate(-90)" text-anchor="middle">metric, mean over prompts</text></svg>'
    )
    return "\n".join(parts)


def _series_svg(kind, points, n_half, px, py, i: int, box: tuple[int, int, int]) -> list[str]:
    color = COLORS[kind]
    coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    dots = "".join(
        f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
        f"<title>{kind}: {x:g} ablated, metric {y:.4g}</title></circle>"
        for x, y in points
    )
    left, top, foot = box  # the plot's left, top and bottom edges
    out = [
        f'<polyline class="series" data-kind="{kind}" fill="none" stroke="{color}" '
        f'stroke-width="2" points="{coords}"/>{dots}',
        # The legend sits in the top margin, one entry per kind side by side: inside the plot
        # it would cover the curves, which start at the top left.
        f'<line x1="{left + 250 * i}" x2="{left + 250 * i + 20}" y1="{top - 14}" '
        f'y2="{top - 14}" stroke="{color}" stroke-width="2"/>'
        f'<text class="legend" x="{left + 250 * i + 26}" y="{top - 10}">{kind}'
        f"{f' (half removed at {n_half})' if n_half else ''}</text>",
    ]
    if n_half:  # where this kind removed half of the metric: a dotted line down the plot
        out.append(
            f'<line class="n-half" x1="{px(n_half):.1f}" x2="{px(n_half):.1f}" y1="{top}" '
            f'y2="{foot}" stroke="{color}" stroke-dasharray="2,3"/>'
        )
    return out


def ranked_table(site: dict[str, Any], kind: str, links: FeatureLinks | None) -> str:
    """The ranked nodes of one kind as a table: rank, node (a feature linked to its dashboard
    page), label where known, attribution and verified effect."""
    ranked = site[kind]["ranked"]
    labelled = kind == "features"
    rows = []
    for r in ranked:
        node = r["node"]
        cell = feature_link(node, str(node), links) if labelled else str(node)
        label = f'<td class="label">{esc(r["label"] or "")}</td>' if labelled else ""
        rows.append(
            f'<tr><td class="num">{r["rank"]}</td><td class="num">{cell}</td>{label}'
            f'<td class="num">{r["attribution"]:+.4f}</td>'
            f'<td class="num">{r["verified_effect"]:+.4f}</td></tr>'
        )
    head = "<th>label</th>" if labelled else ""
    return (
        f'<h3>top {kind}</h3><div class="scroll"><table class="ranked" data-kind="{kind}">'
        f'<thead><tr><th class="num">#</th><th class="num">{NODE_NAMES[kind]}</th>{head}'
        '<th class="num">attribution</th><th class="num">verified effect</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def curve_html(result: dict[str, Any], *, links: dict[str, FeatureLinks] | None = None) -> str:
    """A self-contained HTML page: per site, the curve beside the ranked tables (features
    linked to their dashboard pages by ``links``, by SAE id), and the summary lines."""
    body = []
    for site in result["sites"]:
        tables = "".join(
            ranked_table(site, kind, (links or {}).get(site["sae"]))
            for kind in KINDS
            if kind in site
        )
        lines = [_summary_line(site, k) for k in KINDS if k in site]
        body.append(
            f'<section class="site"><h2>{esc(site["sae"])} (layer {esc(site["layer"])})</h2>'
            f'<div class="row"><figure>{curve_svg(result, site)}</figure>'
            f'<div class="tables">{tables}</div></div>'
            f'<pre class="summary">{esc(chr(10).join(lines))}</pre></section>'
        )
    title = f"steer pinpoint: {result['metric']}"
    meta = (
        f"model {result.get('model', '')} \u00b7 clean mean {result['clean_metric']:.3f} over "
        f"{result['n_prompts']} prompts \u00b7 method {result['method']} \u00b7 ablation "
        f"{result['ablation']}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{PAGE_CSS}</style></head>\n<body>"
        f'<h1>{esc(title)}</h1>\n<p class="meta">{esc(meta)}</p>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
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
