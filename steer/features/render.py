"""Show a feature in the terminal (rich): statistics, histogram, output tokens, its top
contexts and a few quantile samples per band, every token shaded by how strongly the feature
fired on it."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from steer.features.pages import quantile_bands
from steer.features.store import FeatureRecord
from steer.sae.labels import Label

SPARK = " ▁▂▃▄▅▆▇█"
# Shading runs from the terminal background to this colour at the feature's max activation.
HOT = (255, 140, 0)


def visible(token: str) -> str:
    """A token as it should print on one line: newlines and tabs shown as symbols."""
    return token.replace("\n", "⏎").replace("\r", "").replace("\t", "→")


def shade(act: float, top: float) -> str | None:
    """The rich background style for an activation ``act`` on a scale up to ``top``."""
    if act <= 0 or top <= 0:
        return None
    level = min(1.0, act / top)
    r, g, b = (round(255 - (255 - c) * (0.15 + 0.85 * level)) for c in HOT)
    return f"black on rgb({r},{g},{b})"


def sparkline(counts: list[int]) -> str:
    """One character per bin, height proportional to the count (empty bins blank)."""
    peak = max(counts, default=0)
    if peak == 0:
        return ""
    return "".join(SPARK[0 if c == 0 else max(1, round(c / peak * 8))] for c in counts)


def context_text(tokens: list[str], acts: list[float], focus: int, top: float) -> Text:
    """A context as rich Text: tokens shaded by activation, the max token underlined bold."""
    out = Text()
    for i, (tok, act) in enumerate(zip(tokens, acts, strict=True)):
        style = shade(act, top) or ""
        if i == focus:
            style = f"bold underline {style}".strip()
        out.append(visible(tok), style=style or None)
    return out


def feature_panel(
    record: FeatureRecord,
    *,
    label: Label | None,
    meta: dict[str, Any],
    contexts: int = 10,
) -> Group:
    """Everything about one feature, ready for ``Console.print``."""
    title = Text(f"feature {record.id}", style="bold")
    if label is not None:
        title.append(f"  {label.name}", style="bold cyan")
        title.append(f"  ({label.source})", style="dim")
    parts: list[Any] = [title]
    if label is not None and label.description:
        parts.append(Text(label.description, style="italic"))

    stats = Table.grid(padding=(0, 2))
    stats.add_column(style="dim")
    stats.add_column()
    one_in = f" (1 in {round(1 / record.density):,} tokens)" if record.density > 0 else ""
    stats.add_row("density", f"{record.density:.3%}{one_in}")
    stats.add_row("fired", f"{record.n_fired:,} of {meta.get('tokens_indexed', 0):,} tokens")
    stats.add_row("mean / max act", f"{record.mean_act:.2f} / {record.max_act:.2f}")
    edges = meta.get("hist_edges") or []
    if edges:
        stats.add_row(
            "histogram",
            Text(sparkline(record.hist), style="green")
            + Text(f"  {edges[0]:g} .. {edges[-1]:g} (log bins)", style="dim"),
        )
    parts.append(stats)

    logits = Table(title="output tokens (decoder direction -> logits)", title_justify="left")
    logits.add_column("promoted")
    logits.add_column("", justify="right")
    logits.add_column("suppressed")
    logits.add_column("", justify="right")
    for (up, up_v), (down, down_v) in zip(record.top_logits, record.bottom_logits, strict=False):
        logits.add_row(repr(up), f"{up_v:+.2f}", repr(down), f"{down_v:+.2f}")
    parts.append(logits)

    if not record.contexts:
        parts.append(Text("never fired on the indexed text", style="yellow"))
    else:
        ctx = Table(title="top contexts", title_justify="left", show_header=True, expand=True)
        ctx.add_column("act", justify="right", no_wrap=True)
        ctx.add_column("context (max token underlined)", ratio=1)
        top = record.contexts[0].act
        for c in record.contexts[:contexts]:
            ctx.add_row(f"{c.act:.2f}", context_text(c.tokens, c.acts, c.focus, top))
        parts.append(ctx)
        if record.samples:
            parts.append(_samples_table(record, top))
    return Group(*parts)


def _samples_table(record: FeatureRecord, top: float, per_band: int = 2) -> Table:
    """A few quantile samples of each band (the dashboard shows them all)."""
    table = Table(
        title=f"quantile samples ({len(record.samples)} random firing tokens, {per_band} per band)",
        title_justify="left",
        expand=True,
    )
    table.add_column("band", no_wrap=True, style="dim")
    table.add_column("act", justify="right", no_wrap=True)
    table.add_column("context (sampled token underlined)", ratio=1)
    for low, high, chunk in quantile_bands(record.samples):
        for c in chunk[:per_band]:
            table.add_row(
                f"{low}-{high}%", f"{c.act:.2f}", context_text(c.tokens, c.acts, c.focus, top)
            )
    return table


def print_feature(console: Console, record: FeatureRecord, **kwargs: Any) -> None:
    """Print :func:`feature_panel` in a panel."""
    console.print(Panel(feature_panel(record, **kwargs), expand=True))
