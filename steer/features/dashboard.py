"""A static HTML dashboard of a feature index: no server, it opens from ``file://``.

``index.html`` lists the features (id, label, density, max activation, the tokens each fires
on, the tokens it promotes) with a filter box and sortable columns; ``features/<id>.html`` is
one page per feature (:mod:`steer.features.pages`): top contexts and quantile samples first,
then statistics, histogram, nearest features by decoder cosine and output tokens. Pages are
plain HTML rendered here, every text escaped (tokens can hold ``<``, ``&`` and quotes); the
one script (``index.js``) only filters and sorts rows already on the page, so nothing is
fetched (Chromium blocks ``fetch`` on ``file://``). The templates, stylesheet and script live
in ``steer/data/dashboard/``.

The output folder: the site is written into a fresh folder that replaces ``out`` only once it
is complete. ``out`` may be missing, empty, or a dashboard this command wrote before (its
marker file :data:`steer.html.DASHBOARD_MARKER` lists the files it wrote, and it holds nothing
else); anything else is refused unless ``force``, so no file the user put there is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.features.pages import ASSETS, Site, feature_page, fmt_density, histogram_svg, template
from steer.features.store import FeatureIndex, FeatureSummary
from steer.html import (
    DASHBOARD_FORMAT,
    DASHBOARD_MARKER,
    PAGES_FOLDER,
    esc,
    read_dashboard_marker,
    shown_token,
)
from steer.io import atomic_dir
from steer.sae.labels import Label

__all__ = [
    "DashboardResult",
    "check_output",
    "histogram_svg",
    "index_row",
    "nearest_features",
    "select_features",
    "write_dashboard",
]

STATIC_FILES = ("style.css", "index.js")
NEAREST = 8  # nearest features listed on each page


@dataclass
class DashboardResult:
    """What :func:`write_dashboard` wrote."""

    path: Path
    listed: int
    pages: int


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
        f'<td class="num"><a href="{PAGES_FOLDER}/{summary.id}.html">{summary.id}</a></td>'
        f'<td class="label"{title}>{esc(name)}</td>'
        f'<td class="num">{fmt_density(summary.density)}</td>'
        f'<td class="num">{summary.max_act:.2f}</td>'
        f"<td>{fires}</td><td>{promotes}</td></tr>"
    )


def nearest_features(decoder: Any, k: int = NEAREST) -> tuple[list[list[int]], list[list[float]]]:
    """For every feature, the ``k`` others whose decoder directions (rows of ``decoder``,
    ``[d_sae, d_in]``) have the highest cosine with its own: ``(ids, cosines)``, best first."""
    import torch

    with torch.no_grad():
        w = decoder.detach().float().cpu()
        w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
        k = min(k, len(w) - 1)
        ids, cos = [], []
        for start in range(0, len(w), 1024):  # 1024 rows of d_sae cosines at a time
            sims = w[start : start + 1024] @ w.T
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = -2.0  # never a feature's own neighbour
            top = sims.topk(k, dim=1)
            ids += top.indices.tolist()
            cos += top.values.tolist()
    return ids, cos


def _foreign(folder: Path, marker: dict[str, Any]) -> list[str]:
    """What in ``folder`` a previous dashboard (``marker``) did not write."""
    ours = {str(p) for p in marker["files"]} | {DASHBOARD_MARKER}
    folders = {str(Path(p).parent.as_posix()) for p in ours} - {"."}
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in sorted(dirs):
            if (rel / name).as_posix() not in folders:
                found.append((rel / name).as_posix() + "/")
        dirs[:] = [d for d in dirs if (rel / d).as_posix() in folders]
        found += [(rel / n).as_posix() for n in sorted(files) if (rel / n).as_posix() not in ours]
    return found


def check_output(out: str | Path, *, force: bool = False) -> None:
    """Refuse an output folder whose replacement would delete what this command did not write:
    one that is not empty and not a previous dashboard, or a previous dashboard holding other
    files (unless ``force``), and a path that is a file (always)."""
    out = Path(out)
    if out.is_symlink():
        raise SteerError("is a symbolic link; give --out the folder itself", where=str(out))
    if out.exists() and not out.is_dir():
        raise SteerError("is not a folder; give --out a new or empty folder", where=str(out))
    if not out.exists() or force or not any(out.iterdir()):
        return
    marker = read_dashboard_marker(out)
    if marker is None:
        raise SteerError(
            f"is not empty and not a steer dashboard (no {DASHBOARD_MARKER}); give --out a "
            "new or empty folder, or pass --force to replace it and everything in it",
            where=str(out),
        )
    foreign = _foreign(out, marker)
    if foreign:
        raise SteerError(
            f"is a steer dashboard but also holds {len(foreign)} file(s) it did not write "
            f"(first: {foreign[0]}); move them out, or pass --force to replace the folder and "
            "everything in it",
            where=str(out),
        )


def _marker(meta: dict[str, Any], ids: list[int]) -> dict[str, Any]:
    files = [*STATIC_FILES, "index.html", *(f"{PAGES_FOLDER}/{fid}.html" for fid in ids)]
    keep = ("sae", "sae_sha256", "model", "layer", "d_sae", "tokens_indexed")
    return {
        "format": DASHBOARD_FORMAT,
        **{k: meta.get(k) for k in keep},
        "pages": ids,
        "files": files,
    }


def _index_page(meta: dict[str, Any], labels: dict[int, Label], chosen: list) -> str:
    status = "" if meta.get("status") == "complete" else " (partial index)"
    sources = ", ".join(Path(d["path"]).name for d in meta.get("data", []))
    info = (
        f"{meta.get('d_sae', 0):,} features, layer {meta.get('layer')} of {meta.get('model')}; "
        f"indexed on {meta.get('tokens_indexed', 0):,} tokens of {sources}{status}. "
        f"{len(labels)} labelled."
    )
    return template("index.html").substitute(
        title=esc(f"Features of {meta.get('sae', 'SAE')}"),
        meta=esc(info),
        count=len(chosen),
        rows="\n".join(index_row(s, labels.get(s.id)) for s in chosen),
    )


def write_dashboard(
    index: FeatureIndex,
    labels: dict[int, Label],
    out: str | Path,
    *,
    limit: int | None = None,
    decoder: Any = None,
    sae: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> DashboardResult:
    """Write the dashboard of ``index`` (annotated with ``labels``) to the folder ``out``.

    ``decoder`` (the SAE's ``W_dec``) gives each page its nearest features; ``sae`` is how the
    user named the SAE, for the command that rebuilds an index without quantile samples. The
    folder is checked by :func:`check_output` first and replaced only once the new one is
    complete.
    """
    from tqdm.auto import tqdm

    check_output(out, force=force)
    meta = index.meta
    chosen = select_features(index.features(), labels, limit)
    ids = [s.id for s in chosen]
    name = sae or meta.get("sae", "SAE")
    site = Site(
        meta=meta,
        labels=labels,
        pages=frozenset(ids),
        nearest=nearest_features(decoder) if decoder is not None else None,
        rebuild=f"steer features index {name} --data FILE --rebuild",
    )
    with atomic_dir(out) as tmp:
        for static in STATIC_FILES:
            shutil.copyfile(ASSETS / static, tmp / static)
        pages = tmp / PAGES_FOLDER
        pages.mkdir()
        for i, fid in enumerate(tqdm(ids, desc="pages", unit="page", disable=not progress)):
            page = feature_page(
                index.feature(fid),
                site,
                prev_id=ids[i - 1] if i > 0 else None,
                next_id=ids[i + 1] if i + 1 < len(ids) else None,
            )
            (pages / f"{fid}.html").write_text(page, encoding="utf-8")
        (tmp / "index.html").write_text(_index_page(meta, labels, chosen), encoding="utf-8")
        marker = json.dumps(_marker(meta, ids), separators=(",", ":"))
        (tmp / DASHBOARD_MARKER).write_text(marker + "\n", encoding="utf-8")
    return DashboardResult(Path(out), listed=len(chosen), pages=len(ids))
