"""``steer eval``'s outputs: the table in the terminal, the JSON file and a self-contained HTML
report with the strength sweep plotted (concept score against perplexity ratio)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steer.html import esc
from steer.io import atomic_write_text
from steer.pinpoint.report import nice_ticks

COLORS = {"none": "#444444", "prompt": "#2a7f3f", "diffmean": "#c46a00", "recipe": "#1f5fbf"}
CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}tr.picked{background:#eef4ff}
.note{color:#555;font-size:90%}svg .grid{stroke:#eee}.examples td,.examples th{text-align:left;
vertical-align:top;max-width:320px}"""


def ci(est: dict | None, digits: int = 2) -> str:
    """``0.50 [0.25, 0.75]`` (``-`` for none)."""
    if est is None:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(est['mean'])} [{f.format(est['low'])}, {f.format(est['high'])}]"


def columns(result: dict[str, Any]) -> list[str]:
    """The table's column titles."""
    judges = [f"{j} score" for j in result["judges"]]
    return ["arm", *judges, "ppl ratio", "KL (nats)", "MC accuracy", "tok/s vs plain"]


def cells(row: dict[str, Any], judges: list[str]) -> list[str]:
    """One arm's cells, in :func:`columns` order."""
    speed = row["speed_vs_plain"]
    return [
        row["arm"],
        *(ci(row["scores"][j]) for j in judges),
        ci(row["ppl_ratio"]),
        ci(row["kl"], 3),
        ci(row["mc_accuracy"]),
        "-" if speed is None else f"{speed:.2f}",
    ]


def print_table(result: dict[str, Any], console: Any) -> None:
    """The main table and the sweep, as rich tables (text printed as written, no markup)."""
    from rich.table import Table

    judges = result["judges"]
    for title, rows in (
        ("picked strengths, report half", result["table"]),
        ("sweep, report half", list(result["arms"].values())),
    ):
        table = Table(title=title, title_justify="left")
        for name in columns(result):
            if name == "arm":  # never cut: it says which row is which
                table.add_column(name, no_wrap=True, min_width=12)
            else:
                table.add_column(name, justify="right")
        for row in rows:
            table.add_row(*cells(row, judges))
        console.print(table)
    console.print(
        f"concept {result['concept']!r}; {result['n_prompts']} prompts, strength picked on "
        f"{len(result['split']['pick'])} by {result['picked_by']}, numbers on the other "
        f"{len(result['split']['report'])}; 95 % bootstrap intervals over prompts",
        highlight=False,
    )


def sweep_svg(result: dict[str, Any], *, width: int = 560, height: int = 380) -> str:
    """The sweep as an inline SVG: first judge's score (with its interval) against the
    perplexity ratio, one line per steered family, strengths labelled."""
    judge = result["judges"][0]
    rows = [r for r in result["arms"].values() if r["ppl_ratio"] and r["scores"][judge]]
    left, right, top, bottom = 64, 90, 20, 48  # room on the right for the last label
    xs = [r["ppl_ratio"]["mean"] for r in rows] + [1.0]
    ys = [v for r in rows for v in (r["scores"][judge]["low"], r["scores"][judge]["high"])]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min([*ys, 0.0]), max([*ys, 0.1]))

    def px(x: float) -> float:
        return left + (x - xt[0]) / ((xt[-1] - xt[0]) or 1) * (width - left - right)

    def py(y: float) -> float:
        return top + (yt[-1] - y) / ((yt[-1] - yt[0]) or 1) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sweep" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-size="12" role="img">'
    ]
    for x in xt:
        parts.append(
            f'<line class="grid" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" '
            f'y2="{height - bottom}"/><text x="{px(x):.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{x:g}</text>'
        )
    for y in yt:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py(y):.1f}" '
            f'y2="{py(y):.1f}"/><text x="{left - 6}" y="{py(y) + 4:.1f}" '
            f'text-anchor="end">{y:g}</text>'
        )
    for family, color in COLORS.items():
        fam = sorted((r for r in rows if r["family"] == family), key=lambda r: r["strength"] or 0)
        pts = [(px(r["ppl_ratio"]["mean"]), py(r["scores"][judge]["mean"])) for r in fam]
        if len(pts) > 1:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{color}"/>')
        for r, (x, y) in zip(fam, pts, strict=True):
            s = r["scores"][judge]
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(s["low"]):.1f}" '
                f'y2="{py(s["high"]):.1f}" stroke="{color}" stroke-opacity="0.5"/>'
                f'<circle class="point {family}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
                f'fill="{color}"><title>{esc(r["arm"])}</title></circle>'
                f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" fill="{color}">{esc(r["arm"])}</text>'
            )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">'
        "perplexity ratio vs unsteered (lower: more fluent)</text>"
        f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(judge)} score</text></svg>'
    )
    return "\n".join(parts)


def table_html(result: dict[str, Any], rows: list[dict], cls: str) -> str:
    """A table of arm rows, the picked ones highlighted."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns(result))
    body = "".join(
        f'<tr class="{"picked" if r.get("picked") else ""}">'
        + "".join(f"<td>{esc(c)}</td>" for c in cells(r, result["judges"]))
        + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def examples_html(result: dict[str, Any]) -> str:
    """A few report-half prompts with each picked arm's completion."""
    arms = [r["arm"] for r in result["table"]]
    head = "<th>prompt</th>" + "".join(f"<th>{esc(a)}</th>" for a in arms)
    body = "".join(
        f"<tr><td>{esc(ex['prompt'])}</td>"
        + "".join(f"<td>{esc(ex['completions'].get(a, ''))}</td>" for a in arms)
        + "</tr>"
        for ex in result["examples"]
    )
    return f'<table class="examples"><tr>{head}</tr>{body}</table>'


def report_html(result: dict[str, Any]) -> str:
    """The whole report page (no external assets, no scripts)."""
    title = f"steer eval: {result['recipe']} toward {result['concept']}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
        f'<p class="note">{result["n_prompts"]} prompts; strength picked on '
        f"{len(result['split']['pick'])} by {esc(result['picked_by'])}; every number below is "
        f"on the other {len(result['split']['report'])} (KL and MC: on their own held-out "
        "sets), with 95 % bootstrap intervals.</p><h2>Picked strengths</h2>"
        + table_html(result, result["table"], "main")
        + "<h2>Sweep: effect against fluency</h2>"
        + sweep_svg(result)
        + table_html(result, list(result["arms"].values()), "sweep")
        + "<h2>Examples</h2>"
        + examples_html(result)
        + "</body></html>\n"
    )


def write_outputs(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``eval.json`` and ``report.html`` in ``folder`` (each written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "eval.json", "html": folder / "report.html"}
    atomic_write_text(paths["json"], json.dumps(result, indent=1) + "\n")
    atomic_write_text(paths["html"], report_html(result))
    return paths
