"""Where an SAE named in a recipe lives: a local folder, a builtin shipped with steer, or a
Hugging Face repo (downloaded once into the Hugging Face cache, for users who are online)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.html import FeatureLinks, links_from_options

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "data" / "saes"


def builtin_saes() -> dict[str, Path]:
    """The SAEs shipped inside the steer package, by name."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUILTIN_DIR.iterdir()) if (p / "cfg.json").is_file()}


def sae_folder(name_or_path: str | Path) -> Path:
    """The folder of an SAE given on the command line: a builtin name (``steer sae list``) or a
    folder path."""
    shipped = builtin_saes()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        known = ", ".join(shipped) or "none"
        raise SteerError(
            f"no SAE named {str(name_or_path)!r}: not a builtin (shipped: {known}) and not a folder"
        )
    if not (folder / "cfg.json").is_file():
        raise SteerError("not an SAE folder (no cfg.json in it)", where=str(folder))
    return folder


def sae_source(text: str) -> tuple[Path, dict[str, Any]]:
    """``(path, overrides)`` of an SAE given on the command line in any form steer reads: a
    builtin name, a folder or file in any layout (:mod:`steer.sae.families`), or a SAELens
    ``RELEASE/SAE_ID`` (``gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical``;
    release names hold no ``/``), fetched into the Hugging Face cache."""
    shipped = builtin_saes()
    if text in shipped:
        return shipped[text], {}
    path = Path(text).expanduser()
    if path.exists():
        return path, {}
    release, _, sae_id = text.partition("/")
    from steer.sae.releases import fetch_release_sae, release_list

    if sae_id and release in release_list():
        found = fetch_release_sae(release, sae_id, where=text)
        return found.path, found.overrides
    known = ", ".join(shipped) or "none"
    raise SteerError(
        f"no SAE named {text!r}: not a builtin (shipped: {known}), not a file or folder, "
        "and not a SAELens RELEASE/SAE_ID"
    )


def resolve_sae_path(spec, *, where: str) -> Path:
    """The local folder (or, for layouts with one SAE per file, the file) of the SAE a
    recipe's ``saes[i]`` entry names; a ``release`` entry is fetched into the Hugging Face
    cache (read from it alone with ``HF_HUB_OFFLINE=1``)."""
    if getattr(spec, "release", None) is not None:
        from steer.sae.releases import fetch_release_sae

        return fetch_release_sae(spec.release, spec.sae_id, where=where).path
    if spec.path is not None:
        return Path(spec.path).expanduser()
    if spec.builtin is not None:
        shipped = builtin_saes()
        if spec.builtin not in shipped:
            known = ", ".join(shipped) or "none yet"
            raise SteerError(
                f"unknown builtin SAE {spec.builtin!r} (shipped: {known})", where=where
            )
        return shipped[spec.builtin]
    return _download(spec.hf, spec.subfolder, where=where)


def sae_overrides(spec: Any, *, where: str) -> dict[str, Any]:
    """The SAELens cfg keys that win over an SAE's own files for a recipe's ``saes[i]``
    entry: its release's settings (``normalize_activations``, ``norm_scaling_factor``,
    centring...) and the entry's own ``norm_scaling_factor``."""
    overrides: dict[str, Any] = {}
    if getattr(spec, "release", None) is not None:
        from steer.sae.releases import find_release

        overrides.update(
            find_release(spec.release, spec.sae_id, where=where).overrides(spec.sae_id)
        )
    if getattr(spec, "norm_scaling_factor", None) is not None:
        overrides["norm_scaling_factor"] = spec.norm_scaling_factor
    return overrides


def local_sae_folder(spec: Any, where: str) -> Path | None:
    """The local folder of a recipe's SAE entry; None for one on the Hugging Face hub (reports
    and link checks never go to the network)."""
    return None if spec.remote else resolve_sae_path(spec, where=where)


def dashboard_links(
    saes: Sequence[Any], values: Sequence[str], page_folder: str | Path
) -> dict[str, FeatureLinks]:
    """The dashboard links of each of a recipe's ``saes`` (steering or pinpoint) from
    ``--dashboard`` values (``SAE=DIR_OR_URL``, or one location when there is one SAE), for a
    page written into ``page_folder``. A location that is not a dashboard of that SAE's weights
    is a one-line :class:`SteerError`, raised before any model is loaded."""
    from steer.sae.configs import WEIGHTS_FILENAME

    weights = {}
    for i, spec in enumerate(saes):
        folder = local_sae_folder(spec, f"saes[{i}]")
        weights[spec.id] = folder / WEIGHTS_FILENAME if folder is not None else None
    try:
        return links_from_options(values, weights, page_folder)
    except ValueError as exc:
        raise SteerError(str(exc)) from None


def _download(repo_id: str, subfolder: str | None, *, where: str) -> Path:
    patterns = [f"{subfolder.strip('/')}/*"] if subfolder else None
    root = fetch_snapshot(repo_id, patterns, where=where)
    return root / subfolder if subfolder else root


def fetch_snapshot(repo_id: str, patterns: list[str] | None, *, where: str) -> Path:
    """The local snapshot of a Hugging Face repo holding the files ``patterns`` match (all with
    ``None``), downloaded into the cache once; with ``HF_HUB_OFFLINE=1``, the cache alone. Any
    failure (network, auth, missing repo, not cached offline) is one line."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, auth, missing repo, not cached offline: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"cannot fetch SAE repo {repo_id!r}: {first}", where=where) from None
