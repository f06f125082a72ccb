"""A static HTML dashboard of a feature index: no server, it opens from ``file://``.

``index.html`` lists the features (id, label, density, max activation, the tokens each fires
on, the tokens it promotes) with a filter box and sortable columns; ``features/<id>.html`` is
one page per feature with its statistics, histogram (inline SVG), output tokens and top
contexts, tokens shaded by activation. Pages are plain HTML rendered here, every text escaped
(tokens can hold ``<``, ``&`` and quotes); the one script (``index.js``) only filters and sorts
rows already on the page, so nothing is fetched (Chromium blocks ``fetch`` on ``file://``).
The templates, stylesheet and script live in ``steer/data/dashboard/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from steer.features.store import FeatureIndex, FeatureRecord, FeatureSummary
from steer.html import esc, shown_token
from steer.io import atomic_dir
from steer.sae.labels import Label

ASSETS = Path(__file__).resolve().parent.parent / "data" / "dashboard"
STATIC_FILES = ("style.css", "index.js")


@dataclass
class DashboardResult:
    """What :func:`write_dashboard` wrote."""

    path: Path
    listed: int
    pages: int


def _template(name: str) -> Template:
    return Template((ASSETS / name).read_text(encoding="utf-8"))


def _fmt_density(density: float) -> str:
    return f"{density:.3%}" if density else "0 (never fired)"


def select_features(
    summaries: list[FeatureSummary], labels: dict[int, Label], limit: int | None
) -> list[FeatureSummary]:
    """The features that get a page: all of them, or ``limit`` of them with the labelled ones
    first and then the ones that fired, by id."""
    if not limit or limit >= len(summaries):
        return summaries
    labelled = [s for s in summaries if s.id in labels]
    rest = [s for s in summaries if s.id not in labels and s.n_fired > 0]
    return sorted((labelled + rest)[:limit], key=lambda s: s.id)


# --------------------------------------------------------------------------- index page


def index_row(summary: FeatureSummary, label: Label | None) -> str:
    """One ``<tr>`` of the feature list, with the data attributes the script sorts by."""
    name = label.name if label else ""
    search = " ".join([str(summary.id), name, *summary.top_tokens, *summary.top_logits]).lower()
    fires = " ".join(f'<span class="tok">{esc(shown_token(t))}</span>' for t in summary.top_tokens)
    promotes = " ".join(
        f'<span class="tok">{esc(shown_token(t))}</span>' for t in summary.top_logits
    )
    title = f' title="{esc(label.description)}"' if label and label.description else ""
    return (
        f'<tr data-id="{summary.id}" data-label="{esc(name.lower())}" '
        f'data-density="{summary.density:.6g}" data-max="{summary.max_act:.4g}" '
        f'data-search="{esc(search)}">'
        f'<td class="num"><a href="features/{summary.id}.html">{summary.id}</a></td>'
        f'<td class="label"{title}>{esc(name)}</td>'
        f'<td class="num">{_fmt_density(summary.density)}</td>'
        f'<td class="num">{summary.max_act:.2f}</td>'
        f"<td>{fires}</td><td>{promotes}</td></tr>"
    )


# --------------------------------------------------------------------------- feature page


def histogram_svg(
    counts: list[int], edges: list[float], *, width: int = 480, height: int = 120
) -> str:
    """An inline SVG bar chart of ``counts`` over bins ``edges`` (log-spaced; one more edge
    than counts). Each bar's tooltip gives its range and count."""
    n = len(counts)
    if n == 0:
        return '<p class="dim">no histogram</p>'
    peak = max(max(counts), 1)
    plot_h = height - 18
    bar_w = width / n
    bars = []
    for i, c in enumerate(counts):
        h = 0 if c == 0 else max(1.0, c / peak * plot_h)
        lo = edges[i] if i < len(edges) else 0
        hi = edges[i + 1] if i + 1 < len(edges) else lo
        bars.append(
            f'<rect x="{i * bar_w + 1:.1f}" y="{plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
            f'height="{h:.1f}"><title>{lo:g} to {hi:g}: {c}</title></rect>'
        )
    ticks = "".join(
        f'<text x="{i * bar_w:.1f}" y="{height - 4}">{edges[i]:g}</text>'
        for i in range(0, min(n, len(edges)), 4)
    )
    return (
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="activation histogram">{"".join(bars)}{ticks}</svg>'
    )


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


def _logit_rows(pairs: list[tuple[str, float]]) -> str:
    return "".join(
        f'<tr><td class="tok">{esc(repr(tok))}</td><td>{value:+.2f}</td></tr>'
        for tok, value in pairs
    )


def feature_page(
    record: FeatureRecord,
    label: Label | None,
    meta: dict[str, Any],
    *,
    prev_id: int | None,
    next_id: int | None,
) -> str:
    """The HTML page of one feature."""
    name = f" \u2014 {label.name}" if label else ""
    heading = f"Feature {record.id}" + (
        f' <span class="label" id="label">{esc(label.name)}</span>' if label else ""
    )
    description = (
        f'<p class="desc" id="description">{esc(label.description)}</p>'
        if label and label.description
        else ""
    )
    nav = ['<a href="../index.html">\u2190 all features</a>', "<span>"]
    if prev_id is not None:
        nav.append(f'<a href="{prev_id}.html">\u2039 {prev_id}</a> ')
    if next_id is not None:
        nav.append(f'<a href="{next_id}.html">{next_id} \u203a</a>')
    nav.append("</span>")
    tokens = meta.get("tokens_indexed", 0)
    stats = [
        ("density", _fmt_density(record.density)),
        ("fired on", f"{record.n_fired:,} of {tokens:,} tokens"),
        ("mean activation (when firing)", f"{record.mean_act:.3f}"),
        ("max activation", f"{record.max_act:.3f}"),
    ]
    if label:
        stats.append(("label source", label.source))
    top = record.contexts[0].act if record.contexts else 0.0
    contexts = (
        "\n".join(
            f'<tr><td class="num">{c.act:.2f}</td>'
            f'<td class="ctx">{context_html(c.tokens, c.acts, c.focus, top)}</td></tr>'
            for c in record.contexts
        )
        or '<tr><td></td><td class="dim">never fired on the indexed text</td></tr>'
    )
    return _template("feature.html").substitute(
        title=esc(f"Feature {record.id}{name} \u00b7 {meta.get('sae', '')}"),
        nav="".join(nav),
        id=record.id,
        heading=heading,
        description=description,
        stats="\n".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in stats),
        histogram=histogram_svg(record.hist, meta.get("hist_edges") or []),
        promoted=_logit_rows(record.top_logits),
        suppressed=_logit_rows(record.bottom_logits),
        contexts=contexts,
    )


# --------------------------------------------------------------------------- the site


def write_dashboard(
    index: FeatureIndex,
    labels: dict[int, Label],
    out: str | Path,
    *,
    limit: int | None = None,
    progress: bool = True,
) -> DashboardResult:
    """Write the dashboard of ``index`` (annotated with ``labels``) to the folder ``out``,
    atomically: an existing folder is replaced only once the new one is complete."""
    from tqdm.auto import tqdm

    meta = index.meta
    chosen = select_features(index.features(), labels, limit)
    ids = [s.id for s in chosen]
    with atomic_dir(out) as tmp:
        for name in STATIC_FILES:
            shutil.copyfile(ASSETS / name, tmp / name)
        pages = tmp / "features"
        pages.mkdir()
        for i, fid in enumerate(tqdm(ids, desc="pages", unit="page", disable=not progress)):
            page = feature_page(
                index.feature(fid),
                labels.get(fid),
                meta,
                prev_id=ids[i - 1] if i > 0 else None,
                next_id=ids[i + 1] if i + 1 < len(ids) else None,
            )
            (pages / f"{fid}.html").write_text(page, encoding="utf-8")
        status = "" if meta.get("status") == "complete" else " (partial index)"
        sources = ", ".join(Path(d["path"]).name for d in meta.get("data", []))
        info = (
            f"{meta.get('d_sae', 0):,} features, layer {meta.get('layer')} of {meta.get('model')}; "
            f"indexed on {meta.get('tokens_indexed', 0):,} tokens of {sources}{status}. "
            f"{len(labels)} labelled."
        )
        (tmp / "index.html").write_text(
            _template("index.html").substitute(
                title=esc(f"Features of {meta.get('sae', 'SAE')}"),
                meta=esc(info),
                count=len(chosen),
                rows="\n".join(index_row(s, labels.get(s.id)) for s in chosen),
            ),
            encoding="utf-8",
        )
    return DashboardResult(Path(out), listed=len(chosen), pages=len(ids))
