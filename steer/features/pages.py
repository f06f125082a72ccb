"""One feature's page of the dashboard: contexts first, then the numbers around them.

The page leads with the feature's id, label and description, then its top contexts (above the
fold) and its quantile samples: contexts around a uniform random sample of the tokens it fired
on, in quarters by activation, so a reader sees what it does at moderate activation too. A side
column holds the statistics, the activation histogram (inline SVG with axes; each bar's count
on it and on hover), the nearest features by decoder cosine (linked to their pages) and the
output tokens. Everything shown comes from the index, the labels and the SAE's decoder; every
text is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from steer.features.store import Context, FeatureRecord
from steer.html import esc, shown_token
from steer.sae.labels import Label

ASSETS = Path(__file__).resolve().parent.parent / "data" / "dashboard"
BANDS = 4  # quantile samples are shown in quarters by activation


@dataclass(frozen=True)
class Site:
    """What every feature page of one dashboard shares."""

    meta: dict[str, Any]
    labels: dict[int, Label]
    pages: frozenset[int]  # the features that have a page (links go only there)
    # Per feature, its nearest features by decoder cosine: (ids, cosines); None: not computed.
    nearest: tuple[list[list[int]], list[list[float]]] | None = None
    rebuild: str = "steer features index SAE --data FILE --rebuild"


def template(name: str) -> Template:
    """A page template of ``steer/data/dashboard``."""
    return Template((ASSETS / name).read_text(encoding="utf-8"))


def fmt_density(density: float) -> str:
    """A density as the pages show it."""
    return f"{density:.3%}" if density else "0 (never fired)"


def _tick(value: float) -> str:
    # 0.01, 0.32, 1.8, 18, 178: two significant digits below 10, whole numbers above.
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _count(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


def _nice_step(peak: float, ticks: int = 4) -> float:
    raw = peak / ticks
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def histogram_svg(
    counts: list[int], edges: list[float], *, width: int = 340, height: int = 190
) -> str:
    """An inline SVG bar chart of ``counts`` over the log-spaced bins ``edges`` (one more edge
    than counts), cropped to the bins around the ones that are not empty: axis titles, x ticks
    at the bin edges, y ticks in tokens, each bar's count above it and in its tooltip."""
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero or len(edges) != len(counts) + 1:
        return '<p class="dim">no activations to show</p>'
    lo, hi = max(nonzero[0] - 1, 0), min(nonzero[-1] + 2, len(counts))
    left, right, top, bottom = 46, 8, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    bar_w = plot_w / (hi - lo)
    step = _nice_step(max(counts))
    y_max = step * -(-max(counts) // step)
    parts = [
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="activation histogram">'
    ]
    for k in range(int(y_max // step) + 1):
        y = top + plot_h - k * step / y_max * plot_h
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">'
            f"{_count(int(k * step))}</text>"
        )
    for j, i in enumerate(range(lo, hi)):
        c, x = counts[i], left + j * bar_w
        h = 0 if c == 0 else max(1.0, c / y_max * plot_h)
        below = f"below {_tick(edges[1])}" if i == 0 else None
        above = f"{_tick(edges[-2])} and above" if i == len(counts) - 1 else None
        what = below or above or f"{_tick(edges[i])} to {_tick(edges[i + 1])}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
            f'height="{h:.1f}"><title>activation {what}: {c:,} tokens</title></rect>'
        )
        if c and bar_w >= 18:
            parts.append(
                f'<text class="count" x="{x + bar_w / 2:.1f}" y="{top + plot_h - h - 3:.1f}" '
                f'text-anchor="middle">{_count(c)}</text>'
            )
    every = 1 if hi - lo <= 8 else 2
    for i in range(lo, hi + 1, every):
        x = left + (i - lo) * bar_w
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 13}" text-anchor="middle">'
            f"{_tick(edges[i])}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/>'
        f'<text class="title" x="{left + plot_w / 2:.1f}" y="{height - 6}" '
        'text-anchor="middle">activation (log-spaced bins)</text>'
        f'<text class="title" transform="translate(11 {top + plot_h / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">tokens</text></svg>'
    )
    return "".join(parts)


def context_html(tokens: list[str], acts: list[float], focus: int, top: float) -> str:
    """A context as HTML: each firing token shaded by its activation relative to ``top``."""
    parts = []
    for i, (tok, act) in enumerate(zip(tokens, acts, strict=True)):
        text = esc(shown_token(tok))
        cls = ' class="focus"' if i == focus else ""
        if act > 0 and top > 0:
            alpha = 0.15 + 0.85 * min(1.0, act / top)
            parts.append(
                f'<span{cls} data-act="{act:g}" title="{act:g}" '
                f'style="background:rgba(var(--hot),{alpha:.2f})">{text}</span>'
            )
        elif cls:
            parts.append(f"<span{cls}>{text}</span>")
        else:
            parts.append(text)
    return "".join(parts)


def context_rows(contexts: list[Context], top: float) -> str:
    """The ``<tr>`` of each context: its activation and the shaded tokens."""
    return "\n".join(
        f'<tr><td class="num">{c.act:.2f}</td>'
        f'<td class="ctx">{context_html(c.tokens, c.acts, c.focus, top)}</td></tr>'
        for c in contexts
    )


def quantile_bands(samples: list[Context], bands: int = BANDS) -> list[tuple[int, int, list]]:
    """The samples (strongest first) cut into ``bands`` groups of equal size by rank:
    ``(low percentile, high percentile, contexts)``, the highest band first."""
    n = len(samples)
    bands = min(bands, n)
    out = []
    for b in range(bands):
        chunk = samples[round(b * n / bands) : round((b + 1) * n / bands)]
        out.append((round(100 * (1 - (b + 1) / bands)), round(100 * (1 - b / bands)), chunk))
    return out


def samples_section(record: FeatureRecord, site: Site, top: float) -> str:
    """The quantile samples, one table per band; or what to do when the index has none."""
    if record.samples is None:
        return (
            '<p class="note" id="no-samples">This index has no quantile samples: it was built '
            "before steer sampled them. Rebuild it to add them: "
            f"<code>{esc(site.rebuild)}</code></p>"
        )
    if not record.samples:
        return '<p class="dim">never fired on the indexed text</p>'
    n = len(record.samples)
    parts = [
        f'<p class="dim">A uniform random sample of {n} of the {record.n_fired:,} tokens this '
        "feature fired on, in bands of equal size by activation (the sampled token is "
        "outlined; shading on the scale of the top contexts).</p>"
    ]
    for i, (low, high, chunk) in enumerate(quantile_bands(record.samples)):
        acts = f"activation {chunk[-1].act:.2f} to {chunk[0].act:.2f}"
        parts.append(
            f'<h3 class="band">{low}\u2013{high}th percentile <span class="dim">\u00b7 {acts}'
            f"</span></h3>"
            f'<table class="ctxs samples" id="band-{i}"><tbody>{context_rows(chunk, top)}'
            "</tbody></table>"
        )
    return "\n".join(parts)


def nearest_section(feature: int, site: Site) -> str:
    """The features whose decoder directions are closest to this one's, linked."""
    if site.nearest is None:
        return '<p class="dim">not computed: the dashboard was written without the SAE</p>'
    ids, cosines = site.nearest[0][feature], site.nearest[1][feature]
    rows = []
    for other, cos in zip(ids, cosines, strict=True):
        label = site.labels.get(other)
        name = esc(label.name) if label else ""
        link = f'<a href="{other}.html">{other}</a>' if other in site.pages else str(other)
        rows.append(
            f'<tr><td class="id">{link}</td><td class="label">{name}</td>'
            f'<td class="num">{cos:.3f}</td></tr>'
        )
    return (
        '<table id="nearest-table"><thead><tr><th>feature</th><th>label</th>'
        f'<th class="num">cosine</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _logit_rows(pairs: list[tuple[str, float]]) -> str:
    return "".join(
        f'<tr><td class="tok">{esc(repr(tok))}</td><td>{value:+.2f}</td></tr>'
        for tok, value in pairs
    )


def _nav(prev_id: int | None, next_id: int | None) -> str:
    nav = ['<a href="../index.html">\u2190 all features</a>', "<span>"]
    if prev_id is not None:
        nav.append(f'<a href="{prev_id}.html">\u2039 {prev_id}</a> ')
    if next_id is not None:
        nav.append(f'<a href="{next_id}.html">{next_id} \u203a</a>')
    return "".join([*nav, "</span>"])


def feature_page(
    record: FeatureRecord, site: Site, *, prev_id: int | None, next_id: int | None
) -> str:
    """The HTML page of one feature."""
    label = site.labels.get(record.id)
    meta = site.meta
    name = f" \u2014 {label.name}" if label else ""
    heading = f"Feature {record.id}" + (
        f' <span class="label" id="label">{esc(label.name)}</span>' if label else ""
    )
    description = (
        f'<p class="desc" id="description">{esc(label.description)}</p>'
        if label and label.description
        else ""
    )
    stats = [
        ("density", fmt_density(record.density)),
        ("fired on", f"{record.n_fired:,} of {meta.get('tokens_indexed', 0):,} tokens"),
        ("mean activation (when firing)", f"{record.mean_act:.3f}"),
        ("max activation", f"{record.max_act:.3f}"),
    ]
    if label:
        stats.append(("label source", label.source))
    top = record.contexts[0].act if record.contexts else record.max_act
    contexts = context_rows(record.contexts, top) or (
        '<tr><td></td><td class="dim">never fired on the indexed text</td></tr>'
    )
    return template("feature.html").substitute(
        title=esc(f"Feature {record.id}{name} \u00b7 {meta.get('sae', '')}"),
        nav=_nav(prev_id, next_id),
        id=record.id,
        heading=heading,
        description=description,
        n_top=len(record.contexts),
        contexts=contexts,
        samples=samples_section(record, site, top),
        stats="\n".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in stats),
        histogram=histogram_svg(record.hist, meta.get("hist_edges") or []),
        nearest=nearest_section(record.id, site),
        promoted=_logit_rows(record.top_logits),
        suppressed=_logit_rows(record.bottom_logits),
    )
