"""The HTML report of a monitored run: one self-contained page that opens from ``file://``.

For every prompt it shows the prompt and the steered completion token by token, each token
shaded by its monitor score for one group (the per-token trace of
:meth:`steer.steering.live.LiveMonitor.trace`), tokens where the group's monitor fired
outlined, a badge where a group's action (warn, stop, a conditional intervention) started, and
the baseline completion under it so a reader sees what the action changed. The header lists
each group with its features, monitor and settings, action and how often it fired.

With several groups the page holds one shaded block per group and a ``<select>`` shows one of
them; the inline script only toggles ``hidden``, so nothing is fetched and the stylesheet
(``steer/data/monitor_report.css``) is inlined. Every text from the run is escaped.

Features are named by their label (``labels.json`` beside the SAE), falling back to the id,
and with a dashboard location for their SAE (``steer run --report F --dashboard DIR_OR_URL``)
every feature is a link to its dashboard page (:func:`steer.html.feature_links`: relative to
the report's folder for a local dashboard, so the two can move together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.html import FeatureLinks, esc, feature_link, shown_token
from steer.io import atomic_write_text, check_writable
from steer.sae.labels import Label, load_labels
from steer.sae.sources import local_sae_folder
from steer.steering.monitors import describe_monitor
from steer.steering.recipe import MonitorSpec, Recipe
from steer.steering.results import PromptResult, RunResults

STYLESHEET = Path(__file__).resolve().parent.parent / "data" / "monitor_report.css"

LEGEND = (
    "Shading: score = largest watched activation at the token, relative to the larger of the "
    "threshold (if the monitor has one) and the group's highest score in this run; for TopK "
    "SAEs, where the monitor did not fire this may be the feature's encoder pre-activation, an "
    "upper bound. Outlined tokens are where the group's monitor fired (for a threshold "
    "monitor: over the threshold); unshaded tokens were not read by the monitor. Hover a "
    "token for its score."
)

# Shows the selected group's blocks and hides the others; run once at load too, because a
# reload may restore a non-default choice in the <select>.
SCRIPT = """(function () {
  var select = document.getElementById("group");
  if (!select) { return; }
  function show() {
    var blocks = document.querySelectorAll(".shade");
    for (var i = 0; i < blocks.length; i++) {
      blocks[i].hidden = blocks[i].getAttribute("data-group") !== select.value;
    }
  }
  select.addEventListener("change", show);
  show();
})();"""


@dataclass(frozen=True)
class Names:
    """How the report names features: labels and dashboard links, per SAE id."""

    labels: dict[str, dict[int, Label]]
    links: dict[str, FeatureLinks]

    def label(self, sae: str, feature: Any) -> Label | None:
        """The label of ``feature`` of SAE ``sae``, if it has one."""
        return self.labels.get(sae, {}).get(feature) if isinstance(feature, int) else None

    def html(self, sae: str, feature: Any) -> str:
        """``feature`` named by its label (else its id), linked to its dashboard page."""
        label = self.label(sae, feature)
        text = f"{label.name} ({feature})" if label else str(feature)
        tip = f"feature {feature}" + (
            f": {label.description}" if label and label.description else ""
        )
        return feature_link(feature, text, self.links.get(sae), title=tip if label else None)


NO_NAMES = Names({}, {})


def recipe_labels(recipe: Recipe) -> dict[str, dict[int, Label]]:
    """The labels of each SAE of ``recipe`` by SAE id ({} for an SAE without a labels file)."""
    out = {}
    for i, spec in enumerate(recipe.saes):
        folder = local_sae_folder(spec, f"saes[{i}]")
        out[spec.id] = load_labels(folder) if folder is not None else {}
    return out


@dataclass(frozen=True)
class Group:
    """One monitor as the report shows it: its name, spec and the top of its colour scale."""

    index: int
    name: str
    spec: MonitorSpec
    top: float  # max(threshold if any, highest score in the run): the score of full colour


def _scores(result: PromptResult, name: str) -> dict[str, list]:
    trace = result.trace or {}
    return (trace.get("groups") or {}).get(name) or {}


def _groups(results: Sequence[PromptResult], recipe: Recipe) -> list[Group]:
    groups = []
    for i, (spec, name) in enumerate(zip(recipe.monitors, recipe.group_names(), strict=True)):
        seen = [
            s
            for r in results
            for key in ("prompt", "generated")
            for s in _scores(r, name).get(key) or []
            if s is not None
        ]
        threshold = spec.settings.get("threshold")
        floor = [threshold] if isinstance(threshold, int | float) else []
        groups.append(Group(i, name, spec, max([*floor, *seen], default=0.0)))
    return groups


def _at(values: Sequence[Any] | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def intensity(score: float, top: float) -> float:
    """How strongly a score is shaded: ``score / top`` clipped to [0, 1] (0 when ``top <= 0``,
    e.g. a threshold of 0 and no positive score)."""
    return min(1.0, max(0.0, score / top)) if top > 0 else 0.0


def token_span(
    token: str,
    score: float | None,
    feature: int | None,
    group: Group,
    pos: str,
    *,
    fired: bool,
    names: Names = NO_NAMES,
) -> str:
    """One token as a ``<span>``: shaded by ``score``, outlined where the group's monitor
    ``fired``, its score and feature (with its label) in the tooltip. ``pos`` (``p3``, ``g0``)
    names the token's phase and index."""
    text = esc(shown_token(token))
    if score is None:
        return (
            f'<span class="t na" data-pos="{pos}" title="{esc(group.name)}: not read">{text}</span>'
        )
    label = names.label(group.spec.sae, feature)
    what = (
        f" (feature {feature}{f': {label.name}' if label else ''})" if feature is not None else ""
    )
    return (
        f'<span class="t{" over" if fired else ""}" data-pos="{pos}" data-score="{score:g}" '
        f'title="{esc(f"{group.name}: {score:.2f}{what}")}" '
        f'style="background:rgba(var(--hot),{intensity(score, group.top):.2f})">{text}</span>'
    )


def action_label(action: str) -> str:
    """The badge text of an action: ``warn``, ``stop``, or ``<plugin> from here``."""
    return action if action in ("log", "warn", "stop") else f"{action} from here"


def _badge(action: dict[str, Any]) -> str:
    name = str(action.get("action", ""))
    kind = name if name in ("warn", "stop") else "intervene"
    return f'<span class="badge {kind}" data-action="{esc(name)}">{esc(action_label(name))}</span>'


def _tokens(tokens: list[str], phase: str, scores: dict, group: Group, marks, names) -> str:
    badges, fired = marks
    values, features = scores.get(phase), scores.get(f"{phase}_features")
    pos = phase[0]  # "p" or "g"
    return "".join(
        badges.get((phase, i), "")
        + token_span(
            tok,
            _at(values, i),
            _at(features, i),
            group,
            f"{pos}{i}",
            fired=(phase, i) in fired,
            names=names,
        )
        for i, tok in enumerate(tokens)
    )


def _row(label: str, body: str, cls: str = "toks") -> str:
    return f'<div class="row"><span class="lbl">{esc(label)}</span><div class="{cls}">{body}</div></div>'


def _shaded_block(result: PromptResult, group: Group, names: Names) -> str:
    trace = result.trace or {}
    scores = _scores(result, group.name)
    badges = {
        (a.get("phase"), a.get("token_index")): _badge(a)
        for a in result.actions
        if a.get("group") == group.name
    }
    # Where the monitor reported an event: the same test that acted during generation.
    fired = {
        (e.get("phase"), e.get("token_index"))
        for e in result.events
        if e.get("group") == group.name
    }
    hidden = " hidden" if group.index else ""
    marks = (badges, fired)
    prompt = _tokens(trace.get("prompt_tokens", []), "prompt", scores, group, marks, names)
    steered = _tokens(trace.get("generated_tokens", []), "generated", scores, group, marks, names)
    return (
        f'<div class="shade" data-group="{group.index}"{hidden}>'
        + _row("prompt", prompt)
        + _row("steered", steered)
        + "</div>"
    )


def _action_item(action: dict[str, Any], groups: list[Group], names: Names) -> str:
    where = f"{action.get('phase')} token {action.get('token_index')}"
    sae = next((g.spec.sae for g in groups if g.name == action.get("group")), "")
    feature = names.html(sae, action.get("feature"))
    return (
        f"<li><b>{esc(action.get('group'))}</b>: {esc(action_label(str(action.get('action'))))}"
        f" at {esc(where)} <code>{esc(repr(action.get('token')))}</code> (feature {feature}, "
        f"activation {esc(action.get('activation'))})</li>"
    )


def prompt_section(
    i: int, result: PromptResult, groups: list[Group], names: Names = NO_NAMES
) -> str:
    """One prompt: its text, what its monitors did, the shaded tokens per group, the baseline."""
    parts = [
        f'<section class="prompt" id="prompt-{i}"><h2>Prompt {i}</h2>',
        f'<p class="text">{esc(result.prompt)}</p>',
    ]
    if result.actions:
        items = "".join(_action_item(a, groups, names) for a in result.actions)
        parts.append(f'<ul class="acts">{items}</ul>')
    if result.trace is not None and groups:
        parts += [_shaded_block(result, g, names) for g in groups]
    else:
        parts.append(_row("steered", esc(result.steered), "plain"))
    baseline = esc(result.baseline) if result.baseline is not None else "<i>not run</i>"
    parts.append(_row("baseline", baseline, "plain"))
    parts.append("</section>")
    return "\n".join(parts)


def _group_table(results: Sequence[PromptResult], groups: list[Group], names: Names) -> str:
    if not groups:
        return '<p class="dim">No monitors in this recipe: nothing is shaded.</p>'
    rows = []
    for g in groups:
        events = [[e for e in r.events if e.get("group") == g.name] for r in results]
        features = ", ".join(names.html(g.spec.sae, f) for f in g.spec.features)
        rows.append(
            f'<tr><td>{esc(g.name)}</td><td class="features">{features}</td>'
            f"<td>{esc(describe_monitor(g.spec.plugin, g.spec.settings))}</td><td>{esc(g.spec.action_name)}</td>"
            f'<td class="num">{sum(1 for e in events if e)}</td>'
            f'<td class="num">{sum(len(e) for e in events)}</td></tr>'
        )
    return (
        '<table class="groups"><tr><th>group</th><th>features</th><th>monitor</th>'
        "<th>action</th><th>fired on prompts</th><th>events</th></tr>" + "".join(rows) + "</table>"
    )


def _selector(groups: list[Group]) -> str:
    if len(groups) < 2:
        return ""
    options = "".join(f'<option value="{g.index}">{esc(g.name)}</option>' for g in groups)
    return (
        '<p class="controls"><label for="group">Shade tokens by group </label>'
        f'<select id="group">{options}</select></p>'
    )


def _legend(groups: list[Group]) -> str:
    if not groups:
        return ""
    sample = (
        '<span class="t" style="background:rgba(var(--hot),0.25)">low</span> '
        '<span class="t" style="background:rgba(var(--hot),1)">high</span> '
        '<span class="t over" style="background:rgba(var(--hot),1)">monitor fired</span> '
        '<span class="t na">not read</span>'
    )
    return f'<p class="legend">{sample}<br>{esc(LEGEND)}</p>'


def report_html(
    results: RunResults,
    recipe: Recipe,
    *,
    title: str | None = None,
    labels: dict[str, dict[int, Label]] | None = None,
    links: dict[str, FeatureLinks] | None = None,
) -> str:
    """The report of ``results`` (a run of ``recipe``) as one HTML page; features named by
    ``labels`` and linked by ``links`` (both by SAE id) where given."""
    prompts = results.results
    groups = _groups(prompts, recipe)
    names = Names(labels or {}, links or {})
    title = title or f"Monitor report: {recipe.model}"
    meta = f"model {recipe.model} \u00b7 {len(prompts)} prompt{'s' if len(prompts) != 1 else ''}"
    sections = "\n".join(prompt_section(i, r, groups, names) for i, r in enumerate(prompts))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon: no favicon.ico request, which from file:// logs a console error.
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title>"
        f"<style>\n{STYLESHEET.read_text(encoding='utf-8')}</style></head>\n<body>\n"
        f'<header><h1>{esc(title)}</h1><p class="meta">{esc(meta)}</p>\n'
        f"{_group_table(prompts, groups, names)}\n{_selector(groups)}\n{_legend(groups)}</header>\n"
        f"<main>\n{sections}\n</main>\n<script>\n{SCRIPT}\n</script>\n</body></html>\n"
    )


def write_report(
    results: RunResults,
    recipe: Recipe,
    path: str | Path,
    *,
    title: str | None = None,
    links: dict[str, FeatureLinks] | None = None,
) -> Path:
    """Write the report of ``results`` to the file ``path`` (atomically) and return the path.

    Features are named by the labels beside their SAEs, and linked by ``links`` (from
    `steer.sae.sources.dashboard_links` for this path's folder). The folder must exist: a typo in
    ``--out`` should fail, not create a stray folder tree.
    """
    path = Path(path)
    check_writable(path, what="report")
    page = report_html(results, recipe, title=title, labels=recipe_labels(recipe), links=links)
    try:
        atomic_write_text(path, page)
    except OSError as exc:
        raise SteerError(
            f"cannot write the report: {exc.strerror or exc}", where=str(path)
        ) from None
    return path
