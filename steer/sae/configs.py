"""Reading an SAE folder's cfg.json: SAELens v6, SAELens pre-6.0 (flat), and sparsify.

Finds the folder, tells the formats apart, and turns each into an :class:`SAEConfig` checked
against the class that will run it. Every problem is a one-line
:class:`~steer.errors.SteerError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors

from steer.errors import SteerError
from steer.sae.cfg_values import (
    bool_value,
    dtype_value,
    int_or_none,
    number_or_none,
    refuse,
    require,
    str_or_none,
)
from steer.sae.config import BUILTIN_CHECKS, SAEConfig
from steer.sae.sizes import check_sizes as _check_sizes

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"

# SAELens reads a cfg.json without metadata.sae_lens_version as pre-6.0 and then drops the hook
# name; any version >= 6.0.0 makes it read our nested layout.
SAE_LENS_VERSION = "6.0.0"

# SAEConfig fields that SAELens keeps in metadata.
DEDICATED = ("model_name", "hook_name", "hf_hook_name", "hook_name_out", "hf_hook_name_out")
# Metadata keys save_sae always writes, with these defaults; a loaded value equal to its
# default is not kept in SAEConfig.metadata, so save -> load gives back an equal config.
SAVE_DEFAULTS: dict[str, Any] = {
    "hook_head_index": None,
    "prepend_bos": True,
    "context_size": None,
    "dataset_path": None,
}
# Pre-6.0 flat configs: old key names, and which keys describe the model and data (kept as
# metadata, as SAELens does) rather than training knobs (dropped).
_PRE6_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_layer": "hook_layer",
    "hook_point_head_index": "hook_head_index",
}
_PRE6_METADATA = {
    "hook_layer", "hook_head_index", "prepend_bos", "context_size", "dataset_path",
    "dataset_trust_remote_code", "neuronpedia_id", "model_from_pretrained_kwargs",
    "model_class_name", "exclude_special_tokens", "seqpos_slice", "sae_lens_training_version",
}  # fmt: skip


def _find_folder(path: str | Path) -> Path:
    """The folder holding cfg.json: ``path`` itself or its only SAE subfolder (sparsify
    repos hold one folder per hookpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SteerError("no such SAE folder", where=str(p))
    if not p.is_dir():
        raise SteerError(f"is a file, not an SAE folder (one with {CFG_FILENAME})", where=str(p))
    if (p / CFG_FILENAME).is_file():
        return p
    subs = sorted(c for c in p.iterdir() if c.is_dir() and (c / CFG_FILENAME).is_file())
    if len(subs) == 1:
        return subs[0]
    if subs:
        names = ", ".join(c.name for c in subs)
        raise SteerError(f"holds {len(subs)} SAEs ({names}); give the path of one", where=str(p))
    raise SteerError(
        f"no {CFG_FILENAME} here, nor the files of another SAE layout steer reads "
        "(params.npz, params.safetensors, hyperparams.json, ae.pt, ...)",
        where=str(p),
    )


def read_json(file: Path) -> dict[str, Any]:
    """The JSON object in ``file``; a file that cannot be read, is not valid JSON or holds
    anything but an object is a one-line SteerError naming it."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SteerError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=str(file)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerError(f"cannot read it: {exc}".splitlines()[0], where=str(file)) from None
    if not isinstance(raw, dict):
        raise SteerError("must hold a JSON object", where=str(file))
    return raw


def _saelens_config(raw: dict[str, Any], where: str) -> SAEConfig:
    """SAEConfig from an SAELens cfg.json: v6 (metadata nested) or pre-6.0 (flat)."""
    flat = {_PRE6_RENAMES.get(k, k): v for k, v in raw.items()}
    nested = raw.get("metadata", raw.get("meta"))  # "meta" in the 6.0 release candidates
    nested = nested if isinstance(nested, dict) else None

    def lookup(key: str) -> Any:  # metadata: the nested value, else the old top-level one
        return nested[key] if nested is not None and key in nested else flat.get(key)

    architecture = raw.get("architecture") or "standard"
    activation_fn = flat.get("activation_fn_str", flat.get("activation_fn"))
    kwargs = raw.get("activation_fn_kwargs")
    k = raw.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if architecture == "standard" and activation_fn == "topk":
        architecture = "topk"  # pre-6.0 TopK SAEs were "standard" + activation_fn_str "topk"
    elif architecture == "standard" and activation_fn not in (None, "relu"):
        raise SteerError(f"activation_fn {activation_fn!r} is not supported", where=where)
    reshape = raw.get("reshape_activations", "none")
    # hook_z: the SAE reads the attention heads' outputs flattened to one vector, which is
    # what steer's `z` site is (the output projection's input).
    if reshape not in ("none", None, "hook_z"):
        raise SteerError(
            f"reshape_activations {reshape!r} is not supported (only 'none' and 'hook_z')",
            where=where,
        )
    refuse(raw, "finetuning_scaling_factor", False, where)
    normalize = raw.get("normalize_activations", "none")
    if isinstance(normalize, bool) or normalize is None:  # pre-6.0: a bool
        normalize = "expected_average_only_in" if normalize else "none"
    apply_b_dec = bool_value(raw, "apply_b_dec_to_input", True, where)

    if nested is not None:
        keep = nested
    else:
        keep = {key: value for key, value in flat.items() if key in _PRE6_METADATA}
    metadata = {
        key: value
        for key, value in keep.items()
        if key not in DEDICATED
        and key != "sae_lens_version"
        and not (key in SAVE_DEFAULTS and value == SAVE_DEFAULTS[key])
    }
    return SAEConfig(
        architecture=str_or_none(architecture, "architecture", where),
        d_in=int_or_none(require(raw, "d_in", where), "d_in", where),
        d_sae=int_or_none(require(raw, "d_sae", where), "d_sae", where),
        dtype=dtype_value(raw.get("dtype") or "float32", where),
        apply_b_dec_to_input=apply_b_dec,
        normalize_activations=str(normalize),
        k=int_or_none(k, "k", where),
        **{key: str_or_none(lookup(key), key, where) for key in DEDICATED},
        metadata=metadata,
        norm_scaling_factor=number_or_none(raw.get("norm_scaling_factor"), where),
        rescale_acts_by_decoder_norm=bool_value(raw, "rescale_acts_by_decoder_norm", False, where),
        d_out=int_or_none(raw.get("d_out"), "d_out", where),
    )


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``raw`` (a SAELens cfg.json, v6 or flat) with a release list's ``overrides`` applied:
    as SAELens does at the top level, and also inside a v6 ``metadata`` for the keys that live
    there (``model_from_pretrained_kwargs``, ``neuronpedia_id``...), where SAELens would drop
    them."""
    if not overrides:
        return raw
    merged = {**raw, **overrides}
    nested = raw.get("metadata")
    if isinstance(nested, dict):
        top_level = set(SAEConfig.__dataclass_fields__) - set(DEDICATED) - {"metadata"}
        moved = {k: v for k, v in overrides.items() if k not in top_level}
        merged["metadata"] = {**nested, **moved}
    return merged


def saelens_config(raw: dict[str, Any], where: str) -> SAEConfig:
    """:class:`SAEConfig` from a SAELens cfg dict (v6 or flat pre-6.0), such as the ones
    SAELens's own loaders build for other layouts; one-line SteerErrors naming ``where``."""
    return _saelens_config(raw, where)


@dataclass(frozen=True)
class Located:
    """An SAE found on disk: where it is, which layout it is in and its config.

    ``layout`` is ``"saelens"``, ``"sparsify"`` or the name of a family module
    (:mod:`steer.sae.families`); ``path`` is the SAE's folder, or its file for layouts that
    keep one SAE per file.
    """

    path: Path
    layout: str
    cfg: SAEConfig


def read_config(path: str | Path, pm: Any, overrides: dict[str, Any] | None = None) -> Located:
    """Where the SAE at ``path`` is, its layout, and its config (``overrides``: SAELens cfg keys
    from a release list), checked against its architecture and its sizes against the weights
    file's size (when there is one). A built-in architecture's config is checked without
    importing torch; a plugin's by its class (see :func:`architecture_class`)."""
    from steer.sae.families import family_for

    given = Path(path).expanduser()
    if given.exists() and not (given.is_dir() and (given / CFG_FILENAME).is_file()):
        family = family_for(given)
        if family is not None:
            cfg = family.read_config(given, dict(overrides or {}))
            _check_config(cfg, pm, where=str(given))
            return Located(given, family.NAME, cfg)
    folder = _find_folder(path)
    cfg_file = folder / CFG_FILENAME
    where = str(cfg_file)
    raw = read_json(cfg_file)
    # sparsify's cfg.json has num_latents/expansion_factor where SAELens has d_sae.
    is_sparsify = "d_sae" not in raw and (
        "num_latents" in raw
        or "expansion_factor" in raw
        or ((folder / SPARSIFY_WEIGHTS).is_file() and not (folder / WEIGHTS_FILENAME).is_file())
    )
    if is_sparsify:
        from steer.sae.sparsify import sparsify_config  # it builds on this module's checks

        cfg = sparsify_config(folder, {**raw, **(overrides or {})}, where)
    else:
        cfg = _saelens_config(apply_overrides(raw, overrides), where)
    _check_config(cfg, pm, where=where)
    if is_sparsify:
        weights, latents = folder / SPARSIFY_WEIGHTS, "num_latents"
        if not raw.get("num_latents"):
            latents = "num_latents (d_in * expansion_factor)"
    else:
        weights, latents = folder / WEIGHTS_FILENAME, "d_sae"
    _check_sizes(cfg, weights, latents, where)
    return Located(folder, "sparsify" if is_sparsify else "saelens", cfg)


def _check_config(cfg: SAEConfig, pm: Any, *, where: str) -> None:
    check = BUILTIN_CHECKS.get(cfg.architecture)
    if check is None:
        check = architecture_class(cfg, pm, where=where).check_config
    try:
        check(cfg)
    except (ValueError, TypeError) as exc:
        raise SteerError(str(exc).splitlines()[0], where=where) from None


def read_sae_config(
    path: str | Path, *, pm: Any = None, overrides: dict[str, Any] | None = None
) -> SAEConfig:
    """The config of the SAE at ``path``, reading only its cfg.json (and, for sparsify, the
    weights file's header for the dtype) and the weights file's size, which must be able to
    hold the sizes cfg.json gives: no weights are loaded.

    Raises the same one-line :class:`SteerError` as :func:`load_sae` for anything wrong in
    cfg.json. ``pm`` supplies plugin architectures (built-ins only when ``None``);
    ``overrides`` are SAELens cfg keys from a release list (they win over the file's).
    """
    return read_config(path, pm, overrides).cfg


def architecture_class(cfg: SAEConfig, pm: Any, *, where: str) -> Any:
    """The SAE class that runs ``cfg`` (built-ins and those the plugins of ``pm`` register),
    or a one-line :class:`SteerError` listing the known architectures."""
    from steer.sae.registry import get_architectures

    architectures = get_architectures(pm)
    cls = architectures.get(cfg.architecture)
    if cls is None:
        known = ", ".join(sorted(architectures))
        raise SteerError(
            f"unknown SAE architecture {cfg.architecture!r} (known: {known})", where=where
        )
    return cls


def safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes), read without torch; a
    file too short or malformed for one is a one-line SteerError naming it."""
    try:
        with open(file, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= 100_000_000:
                raise ValueError(f"header size {size}")
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
        return header
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SteerError(f"not a readable safetensors file ({exc})", where=str(file)) from None


def open_safetensors(file: Path) -> Any:
    """``safetensors.safe_open`` on CPU (lazy: reads the header only), with an unreadable,
    truncated or corrupt file reported as a one-line SteerError naming it."""
    try:
        return safetensors.safe_open(str(file), framework="pt", device="cpu")
    except (safetensors.SafetensorError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SteerError(f"not a readable safetensors file ({first})", where=str(file)) from None
