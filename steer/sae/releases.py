"""SAEs named the way the field names them: a SAELens ``release`` and an ``sae_id``.

The release list is SAELens's own ``pretrained_saes.yaml``: read from the installed
``sae-lens`` package when there is one (``pip install steer[saelens]``; its file is read, the
package is not imported), else from the subset steer ships (``steer/data/sae_releases.yaml``,
the releases users meet most). A release gives the Hugging Face repo, the SAE's folder or file
in it, the layout (SAELens's ``conversion_func``) and the settings that live only in the list:
``config_overrides`` (``normalize_activations``, ``model_from_pretrained_kwargs``...) and each
SAE's ``norm_scaling_factor``. Files come through huggingface_hub, so ``HF_HUB_OFFLINE=1``
reads the local cache and nothing else.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from steer.errors import SteerError

SHIPPED_LIST = Path(__file__).resolve().parent.parent / "data" / "sae_releases.yaml"

# conversion_func -> the files of one SAE, relative to its path in the repo ("" = the path is
# the file itself). Layouts steer reads; the others are refused by name below.
_FILES: dict[str | None, tuple[str, ...]] = {
    None: ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"),
    "sae_lens": ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"),
    "gemma_2": ("params.npz",),
    "gemma_2_transcoder": ("params.npz",),
    "gemma_3": ("params.safetensors", "config.json"),
    "llama_scope": ("hyperparams.json", "checkpoints/final.safetensors"),
    "llama_scope_r1_distill": ("config.json", "sae_weights.safetensors"),
    "dictionary_learning_1": ("ae.pt", "config.json"),
    "goodfire": ("",),
    "qwen_scope": ("",),
    "deepseek_r1": ("",),
    "sparsify": ("cfg.json", "sae.safetensors"),
}
# Files an SAE may lack (SAELens's sparsity file is optional).
_OPTIONAL = {"sparsity.safetensors"}
REFUSED_LAYOUTS = {
    "connor_rob_hook_z": "its layout (a bare .pt beside a _cfg.json) is not read yet; its "
    "hook_z site is (convert it to SAELens format)",
    "mntss_clt_layer_transcoder": "cross-layer transcoders write many layers at once; steer "
    "edits one site per SAE",
    "mwhanna_transcoder": "this transcoder layout is not read yet",
    "temporal": "temporal SAEs carry state across tokens; steer's SAEs are per token",
}


@dataclass(frozen=True)
class Release:
    """One release of SAELens's list: where its SAEs live and what applies to all of them."""

    name: str
    repo_id: str
    model: str
    conversion_func: str | None
    paths: dict[str, str]  # sae_id -> path in the repo
    norm_scaling_factors: dict[str, float] = field(default_factory=dict)
    neuronpedia: dict[str, str] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def overrides(self, sae_id: str) -> dict[str, Any]:
        """The SAELens cfg keys this release sets for ``sae_id`` (they win over the files'),
        with where the SAE came from (kept in its metadata)."""
        out = dict(self.config_overrides)
        if sae_id in self.neuronpedia:
            out["neuronpedia_id"] = self.neuronpedia[sae_id]
        if sae_id in self.norm_scaling_factors:
            out["norm_scaling_factor"] = self.norm_scaling_factors[sae_id]
        out.update(release=self.name, sae_id=sae_id, repo_id=self.repo_id)
        return out


@dataclass(frozen=True)
class ReleaseSAE:
    """An SAE of a release, found on disk: its folder or file and the release's overrides."""

    path: Path
    overrides: dict[str, Any]


def installed_list() -> Path | None:
    """SAELens's ``pretrained_saes.yaml`` when sae-lens is installed (found without importing
    it: the import takes seconds)."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    return path if path.is_file() else None


@cache
def release_list() -> dict[str, Release]:
    """Every release steer knows, by name: the installed SAELens list over steer's own."""
    releases = _read_list(SHIPPED_LIST)
    installed = installed_list()
    if installed is not None:
        releases.update(_read_list(installed))
    return releases


def _read_list(path: Path) -> dict[str, Release]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser is ~5x faster
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise SteerError(
            f"cannot read the SAE release list ({exc})".splitlines()[0], where=str(path)
        ) from None
    releases = {}
    for name, entry in (data or {}).items():
        saes = entry.get("saes") or []
        releases[name] = Release(
            name=name,
            repo_id=entry["repo_id"],
            model=str(entry.get("model", "")),
            conversion_func=entry.get("conversion_func"),
            paths={str(s["id"]): str(s["path"]) for s in saes},
            norm_scaling_factors={
                str(s["id"]): float(s["norm_scaling_factor"])
                for s in saes
                if s.get("norm_scaling_factor") is not None
            },
            neuronpedia={str(s["id"]): s["neuronpedia"] for s in saes if s.get("neuronpedia")},
            config_overrides=dict(entry.get("config_overrides") or {}),
        )
    return releases


def find_release(release: str, sae_id: str, *, where: str) -> Release:
    """The release ``release`` holding ``sae_id``; an unknown name or id is a one-line
    SteerError with the closest names."""

    def at(key: str) -> str:
        # saes[0].release in a recipe; --release, or the argument as typed, on the command line
        if where.endswith("]"):
            return f"{where}.{key}"
        return where or f"--{key.replace('_', '-')}"

    releases = release_list()
    if release not in releases:
        raise SteerError(
            f"unknown SAE release {release!r}{_close(release, releases)} ({_source_note()})",
            where=at("release"),
        )
    found = releases[release]
    if sae_id not in found.paths:
        raise SteerError(
            f"release {release!r} has no sae_id {sae_id!r}{_close(sae_id, found.paths)} "
            f"({len(found.paths)} SAEs; `steer sae list --release {release}` lists them)",
            where=at("sae_id"),
        )
    if found.conversion_func in REFUSED_LAYOUTS:
        raise SteerError(
            f"release {release!r} is in the {found.conversion_func!r} layout: "
            f"{REFUSED_LAYOUTS[found.conversion_func]}",
            where=at("release"),
        )
    if found.conversion_func not in _FILES:
        raise SteerError(
            f"release {release!r} uses the layout {found.conversion_func!r}, which steer does "
            "not read",
            where=at("release"),
        )
    return found


def _close(name: str, known: Any) -> str:
    matches = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _source_note() -> str:
    if installed_list() is not None:
        return "release list: the installed sae-lens package's"
    return (
        f"release list: the {len(release_list())} releases steer ships; "
        "`pip install steer[saelens]` adds all of SAELens's"
    )


def fetch_release_sae(release: str, sae_id: str, *, where: str) -> ReleaseSAE:
    """The local folder or file of ``sae_id`` in ``release``, downloaded into the Hugging Face
    cache once (with ``HF_HUB_OFFLINE=1``, read from the cache only), with the release's
    overrides."""
    found = find_release(release, sae_id, where=where)
    path = found.paths[sae_id].strip("/")
    files = _FILES[found.conversion_func]
    wanted = [f"{path}/{name}".rstrip("/") if name else path for name in files]
    from steer.sae.sources import fetch_snapshot  # sources imports this module lazily

    root = fetch_snapshot(found.repo_id, wanted, where=where)
    for rel, name in zip(wanted, files, strict=True):
        if name not in _OPTIONAL and not (root / rel).is_file():
            raise SteerError(
                f"{found.repo_id}/{rel} is not in the Hugging Face cache and could not be "
                f"downloaded{_offline_note()}",
                where=where,
            )
    local = root / path
    return ReleaseSAE(path=local, overrides=found.overrides(sae_id))


def _offline_note() -> str:
    from huggingface_hub import constants

    return " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
