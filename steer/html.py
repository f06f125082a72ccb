"""What every HTML page steer writes shares: escaping, how a token reads inside a context, and
links from a page to the feature dashboard.

The pages themselves (feature dashboards, monitor reports, pinpoint curves) are built by their
own subsystems; they take these helpers from here, not from each other.

Links to a dashboard: ``steer features dashboard`` writes a marker file
(:data:`DASHBOARD_MARKER`) listing the files it wrote, each feature's page at
``features/<id>.html``. A report given a dashboard location (``--dashboard DIR_OR_URL``) links
each feature id to that page: for a URL, ``<url>/features/<id>.html``; for a local folder, the
page's path relative to the folder the report is written to (so the report and the dashboard
can be moved or served together), and only for features the dashboard has a page for.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DASHBOARD_MARKER = ".steer-dashboard.json"
DASHBOARD_FORMAT = "steer-dashboard/1"
PAGES_FOLDER = "features"
# A URL has a scheme (http://, https://, file://); anything else is a local folder.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def esc(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def shown_token(token: str) -> str:
    """A token as it should read inside a context: newlines and tabs shown as symbols."""
    return token.replace("\r", "").replace("\n", "⏎").replace("\t", "→")


def read_dashboard_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of the dashboard in ``folder`` (what it wrote, for which SAE), or None when
    ``folder`` holds no readable steer dashboard marker."""
    try:
        data = json.loads((Path(folder) / DASHBOARD_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != DASHBOARD_FORMAT:
        return None
    if not isinstance(data.get("files"), list) or not isinstance(data.get("pages"), list):
        return None
    return data


@dataclass(frozen=True)
class FeatureLinks:
    """Where each feature's dashboard page is, as seen from one page: ``base + "<id>.html"``
    for the features in ``pages`` (``None``: every feature, for a dashboard given by URL)."""

    base: str
    pages: frozenset[int] | None = None

    def href(self, feature: int) -> str | None:
        """The link to ``feature``'s page, or None when the dashboard has no page for it."""
        if self.pages is not None and feature not in self.pages:
            return None
        return f"{self.base}{int(feature)}.html"


def feature_link(
    feature: Any, text: str, links: FeatureLinks | None, *, title: str | None = None
) -> str:
    """``text`` (escaped) as a link to ``feature``'s dashboard page, or as plain text when
    there are no links, the feature has no page, or ``feature`` is not an id."""
    tip = f' title="{esc(title)}"' if title else ""
    href = links.href(feature) if links is not None and isinstance(feature, int) else None
    if href is None:
        return f"<span{tip}>{esc(text)}</span>" if tip else esc(text)
    return f'<a class="feature" href="{esc(href)}"{tip}>{esc(text)}</a>'


def is_url(location: str) -> bool:
    """Whether a dashboard location is a URL (else it is a local folder)."""
    return bool(_URL.match(location))


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def feature_links(
    location: str, page_folder: str | os.PathLike, *, weights: str | os.PathLike | None = None
) -> FeatureLinks:
    """The links to the dashboard at ``location`` (a URL or a local folder) from a page
    written into ``page_folder``.

    A local folder must hold a steer dashboard, and when ``weights`` (the SAE's weights file)
    is given and the dashboard recorded its SAE's hash, the two must match: a dashboard of
    another SAE would link every id to the wrong feature. Either problem is a ``ValueError``
    whose message is one line for the user.
    """
    if is_url(location):
        return FeatureLinks(location.rstrip("/") + f"/{PAGES_FOLDER}/")
    folder = Path(location).expanduser().resolve()
    marker = read_dashboard_marker(folder)
    if marker is None:
        raise ValueError(
            f"{location}: not a steer feature dashboard (no {DASHBOARD_MARKER}); write one "
            "with `steer features dashboard SAE --out DIR`, or give the dashboard's URL"
        )
    want = marker.get("sae_sha256")
    if weights is not None and want and _sha256(Path(weights)) not in (None, want):
        raise ValueError(
            f"{location}: is the dashboard of other SAE weights ({marker.get('sae')}); "
            "write this SAE's dashboard with `steer features dashboard SAE --out DIR`"
        )
    pages = folder / PAGES_FOLDER
    try:
        rel = Path(os.path.relpath(pages, Path(page_folder).resolve())).as_posix()
        base = quote(rel) + "/"
    except ValueError:  # another drive (Windows): no relative path, use the absolute one
        base = pages.as_uri() + "/"
    return FeatureLinks(base, frozenset(int(p) for p in marker["pages"]))


def dashboard_locations(values: Sequence[str], sae_ids: Sequence[str]) -> dict[str, str]:
    """The dashboard location of each SAE from ``--dashboard`` values: ``SAE=DIR_OR_URL``,
    or a bare ``DIR_OR_URL`` when there is one SAE. A bad value is a ``ValueError`` (one line)."""
    found: dict[str, str] = {}
    for value in values:
        sae, sep, location = value.partition("=")
        if not sep or sae not in sae_ids or is_url(value):
            if len(sae_ids) != 1:
                raise ValueError(
                    f"--dashboard {value}: the recipe has SAEs {', '.join(sae_ids)}; say which "
                    "dashboard is whose with --dashboard SAE=DIR_OR_URL"
                )
            sae, location = sae_ids[0], value
        if not location.strip():
            raise ValueError(f"--dashboard {value}: no folder or URL given")
        if sae in found:
            raise ValueError(f"--dashboard: SAE {sae} is given two dashboards")
        found[sae] = location
    return found


def links_from_options(
    values: Sequence[str], weights: dict[str, Path | None], page_folder: str | os.PathLike
) -> dict[str, FeatureLinks]:
    """The dashboard links of each SAE (``weights``: SAE id -> its weights file, or None where
    it is not local) from ``--dashboard`` values, for a page written into ``page_folder``. A
    bad value or location is a ``ValueError`` (one line)."""
    locations = dashboard_locations(values, list(weights))
    return {
        sae: feature_links(location, page_folder, weights=weights[sae])
        for sae, location in locations.items()
    }
