"""The labels file beside an SAE: feature id -> name, description and source.

``labels.json`` lives in the SAE's folder (the one :func:`steer.sae.sources.resolve_sae_path`
returns) and looks like::

    {"format": "steer-labels/1", "sae": "<folder name>",
     "features": {"<id>": {"name": str, "description": str, "source": "manual"}}}

An SAE shipped with steer keeps its labels in the installed package, which steer never writes:
a user's labels for it go to ``<user data folder>/labels/<sae>.json`` (``$STEER_DATA``, else
the platform's data folder), the changed and added ones under ``features`` and the removed ids
under ``removed``, layered over the shipped ones when read.

Recipes, monitors and the ``steer features`` commands name features by these labels.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from steer.errors import SteerError
from steer.io import atomic_write_text
from steer.sae.sources import BUILTIN_DIR

LABELS_FILE = "labels.json"
FORMAT = "steer-labels/1"
SOURCES = ("manual", "contrast", "auto")


@dataclass(frozen=True)
class Label:
    """The name a person (or a tool) gave one feature."""

    name: str
    description: str = ""
    source: str = "manual"


def check_label_name(name: str | None, *, what: str = "the label") -> str:
    """``name`` stripped, or a one-line :class:`SteerError`: a label is not empty, not a number
    (it would read as a feature id) and on one line (listings print one label per line)."""
    name = (name or "").strip()
    if not name:
        raise SteerError(f"{what} is empty: give the NAME to label the feature with")
    if name.isdigit():
        raise SteerError(f"{what} must not be a number ({name!r} reads as a feature id)")
    if not name.isprintable():
        raise SteerError(f"{what} {name!r} holds a control character (a newline or a tab?)")
    return name


def user_data_dir() -> Path:
    """steer's folder for what users write about shipped things: ``$STEER_DATA`` or the
    platform's user data folder."""
    env = os.environ.get("STEER_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("steer"))


def is_shipped(sae_folder: Path) -> bool:
    """Whether ``sae_folder`` is an SAE shipped inside the steer package."""
    return Path(sae_folder).resolve().is_relative_to(BUILTIN_DIR.resolve())


def labels_path(sae_folder: Path) -> Path:
    """Where labels of the SAE in ``sae_folder`` are written: beside it, or for a shipped SAE
    the user's layer over its shipped labels."""
    if is_shipped(sae_folder):
        return user_data_dir() / "labels" / f"{Path(sae_folder).name}.json"
    return Path(sae_folder) / LABELS_FILE


def load_labels(sae_folder: Path) -> dict[int, Label]:
    """The labels of the SAE in ``sae_folder`` by feature id; ``{}`` when it has none. For a
    shipped SAE, the user's labels are layered over the shipped ones.

    A file that is not valid labels JSON raises a one-line :class:`SteerError` naming it.
    """
    labels = _read(Path(sae_folder) / LABELS_FILE)[0]
    if is_shipped(sae_folder):
        changed, removed = _read(labels_path(sae_folder))
        labels = {fid: lab for fid, lab in labels.items() if fid not in removed}
        labels.update(changed)
    return labels


def save_labels(sae_folder: Path, labels: dict[int, Label]) -> Path:
    """Write ``labels`` as the labels of the SAE in ``sae_folder`` (atomically); for a shipped
    SAE only what differs from the shipped labels, in the user's data folder."""
    path = labels_path(sae_folder)
    data: dict = {"format": FORMAT, "sae": Path(sae_folder).resolve().name}
    if is_shipped(sae_folder):
        shipped = _read(Path(sae_folder) / LABELS_FILE)[0]
        data["removed"] = sorted(fid for fid in shipped if fid not in labels)
        labels = {fid: lab for fid, lab in labels.items() if shipped.get(fid) != lab}
    data["features"] = {
        str(fid): {"name": lab.name, "description": lab.description, "source": lab.source}
        for fid, lab in sorted(labels.items())
    }
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def _read(path: Path) -> tuple[dict[int, Label], set[int]]:
    """``(labels, removed ids)`` of one labels file; nothing when there is no file."""
    if not path.is_file():
        return {}, set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"corrupt labels file: {first}", where=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SteerError(f"corrupt labels file: expected format {FORMAT!r}", where=str(path))
    features = data.get("features")
    removed = data.get("removed", [])
    if not isinstance(features, dict):
        raise SteerError("corrupt labels file: 'features' must be an object", where=str(path))
    if not isinstance(removed, list) or not all(isinstance(r, int) for r in removed):
        raise SteerError("corrupt labels file: 'removed' must be a list of ids", where=str(path))
    return {
        _feature_id(key, path): _label(key, entry, path) for key, entry in features.items()
    }, set(removed)


def _feature_id(key: str, path: Path) -> int:
    try:
        return int(key)
    except ValueError:
        raise SteerError(
            f"corrupt labels file: feature key {key!r} is not an integer", where=str(path)
        ) from None


def _label(key: str, entry: object, path: Path) -> Label:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SteerError(
            f"corrupt labels file: feature {key} needs a string 'name'", where=str(path)
        )
    return Label(
        name=entry["name"],
        description=str(entry.get("description", "")),
        source=str(entry.get("source", "manual")),
    )


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
