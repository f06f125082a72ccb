"""The labels file beside an SAE: feature id -> name, description and source.

``labels.json`` lives in the SAE's folder (the one :func:`steer.sae.sources.resolve_sae_path`
returns) and looks like::

    {"format": "steer-labels/1", "sae": "<folder name>",
     "features": {"<id>": {"name": str, "description": str, "source": "manual"}}}

Recipes, monitors and the ``steer features`` commands name features by these labels.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from steer.errors import SteerError
from steer.io import atomic_write_text

LABELS_FILE = "labels.json"
FORMAT = "steer-labels/1"
SOURCES = ("manual", "contrast", "auto")


@dataclass(frozen=True)
class Label:
    """The name a person (or a tool) gave one feature."""

    name: str
    description: str = ""
    source: str = "manual"


def labels_path(sae_folder: Path) -> Path:
    """Where the labels file of the SAE in ``sae_folder`` lives."""
    return Path(sae_folder) / LABELS_FILE


def load_labels(sae_folder: Path) -> dict[int, Label]:
    """The labels of the SAE in ``sae_folder`` by feature id; ``{}`` when it has no labels file.

    A file that is not valid labels JSON raises a one-line :class:`SteerError` naming it.
    """
    path = labels_path(sae_folder)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"corrupt labels file: {first}", where=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SteerError(f"corrupt labels file: expected format {FORMAT!r}", where=str(path))
    features = data.get("features")
    if not isinstance(features, dict):
        raise SteerError("corrupt labels file: 'features' must be an object", where=str(path))
    labels: dict[int, Label] = {}
    for key, entry in features.items():
        try:
            fid = int(key)
        except ValueError:
            raise SteerError(
                f"corrupt labels file: feature key {key!r} is not an integer", where=str(path)
            ) from None
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SteerError(
                f"corrupt labels file: feature {key} needs a string 'name'", where=str(path)
            )
        labels[fid] = Label(
            name=entry["name"],
            description=str(entry.get("description", "")),
            source=str(entry.get("source", "manual")),
        )
    return labels


def save_labels(sae_folder: Path, labels: dict[int, Label]) -> Path:
    """Write ``labels`` as the labels file of the SAE in ``sae_folder`` (atomically)."""
    path = labels_path(sae_folder)
    data = {
        "format": FORMAT,
        "sae": Path(sae_folder).resolve().name,
        "features": {
            str(fid): {"name": lab.name, "description": lab.description, "source": lab.source}
            for fid, lab in sorted(labels.items())
        },
    }
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def find_label(labels: dict[int, Label], name: str) -> int | None:
    """The id of the feature labelled ``name`` (case-insensitive exact match), or None."""
    wanted = name.strip().casefold()
    for fid, lab in labels.items():
        if lab.name.casefold() == wanted:
            return fid
    return None


def resolve_feature(
    labels: dict[int, Label], ref: int | str, *, d_sae: int, where: str, sae: str | None = None
) -> int:
    """The feature id ``ref`` names: an int in ``[0, d_sae)`` or a label name.

    Label names match case-insensitively and exactly; an unknown one raises a
    :class:`SteerError` that suggests close matches (and names the SAE ``sae`` when given).
    """
    if isinstance(ref, bool):  # bool is an int subclass; True is not feature 1
        raise SteerError(f"feature must be an id or a label, got {ref!r}", where=where)
    if isinstance(ref, int):
        if not 0 <= ref < d_sae:
            raise SteerError(f"feature id {ref} out of range [0, {d_sae})", where=where)
        return ref
    if not isinstance(ref, str):
        raise SteerError(f"feature must be an id or a label, got {ref!r}", where=where)
    fid = find_label(labels, ref)
    if fid is None:
        raise SteerError(_unknown_label_message(labels, ref, sae), where=where)
    if not 0 <= fid < d_sae:
        raise SteerError(
            f"label {ref!r} names feature {fid}, out of range [0, {d_sae})", where=where
        )
    return fid


def _unknown_label_message(labels: dict[int, Label], ref: str, sae: str | None) -> str:
    head = f"unknown label {ref!r}" + (f" for SAE {sae}" if sae else "")
    if not labels:
        return f"{head} (the SAE has no labels.json; add labels with: steer features label)"
    names = {lab.name.casefold(): lab.name for lab in labels.values()}
    close = difflib.get_close_matches(ref.casefold(), list(names), n=3, cutoff=0.6)
    if close:
        return f"{head} (did you mean {', '.join(repr(names[c]) for c in close)}?)"
    return head
