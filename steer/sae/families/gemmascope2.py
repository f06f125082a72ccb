"""Gemma Scope 2 (Gemma 3) SAEs and transcoders: a folder with ``params.safetensors`` and
``config.json``, as in ``google/gemma-scope-2-1b-pt`` at
``resid_post/layer_13_width_16k_l0_big/``.

``params.safetensors`` holds ``w_enc`` ``[d_in, d_sae]``, ``w_dec`` ``[d_sae, d_out]``,
``b_enc``, ``b_dec``, ``threshold`` and, for the "affine" transcoders, a skip matrix
``affine_skip_connection`` ``[d_in, d_out]``. ``config.json`` says ``architecture``
(``jump_relu``), ``model_name``, the Hugging Face sites read and written
(``hf_hook_point_in``/``_out``) and ``affine_connection``. The site is also in the folder's
name (``resid_post``, ``mlp_out``, ``attn_out``, ``transcoder``) and the layer in
``layer_N``; this module reads them all as SAELens 6's ``gemma_3`` loader does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import open_safetensors, read_json, safetensors_header
from steer.sae.families.common import family_config, header_shapes, require_tensors
from steer.sae.families.gemmascope import TRAINING, layer_of, locate

NAME = "gemmascope2"
TITLE = "Gemma Scope 2 (params.safetensors + config.json)"
PARAMS = "params.safetensors"
CONFIG = "config.json"

# A folder named after a Gemma Scope 2 repo or release: gemma-scope-2-4b-pt,
# gemma-scope-2-270m-it-res-all.
REPO_NAME = re.compile(r"^gemma-scope-2-\d+[mb]-(?:pt|it)")
# The folders of one SAE inside a repo: resid_post/layer_13_width_16k_l0_big.
FOLDER_DEPTH = 2
RAW_TENSORS = ("w_enc", "w_dec", "b_enc", "b_dec", "threshold")
SKIP = "affine_skip_connection"
# Site (as SAELens reads it from the folder name, in its order) -> TransformerLens hooks in
# and out ("{}" is the layer).
SITES = {
    "resid_post": ("blocks.{}.hook_resid_post", None),
    "attn_out": ("blocks.{}.attn.hook_z", None),
    "mlp_out": ("blocks.{}.hook_mlp_out", None),
    "transcoder": ("blocks.{}.hook_mlp_in", "blocks.{}.hook_mlp_out"),
}
# For a folder whose name says no site: the site config.json's hf_hook_point_in names, as
# SAELens writes them when it infers a config.json.
_HF_SITES = (
    (re.compile(r"layers\.(\d+)\.pre_feedforward_layernorm\.output$"), "transcoder"),
    (re.compile(r"layers\.(\d+)\.post_feedforward_layernorm\.output$"), "mlp_out"),
    (re.compile(r"layers\.(\d+)\.self_attn\.o_proj\.input$"), "attn_out"),
    (re.compile(r"layers\.(\d+)\.output$"), "resid_post"),
)
_INFERRED_HF_HOOKS = {
    "resid_post": ("model.layers.{}.output", None),
    "attn_out": ("model.layers.{}.self_attn.o_proj.input", None),
    "mlp_out": ("model.layers.{}.post_feedforward_layernorm.output", None),
    "transcoder": (
        "model.layers.{}.pre_feedforward_layernorm.output",
        "model.layers.{}.post_feedforward_layernorm.output",
    ),
}


def matches(path: Path) -> bool:
    """``path`` is a ``params.safetensors`` file or a folder holding one."""
    return (path.name == PARAMS and path.is_file()) or (path.is_dir() and (path / PARAMS).is_file())


def site_of(folder: str, *, transcoder_first: bool = False) -> str | None:
    """The site a Gemma Scope 2 folder name says, as SAELens reads it: its config function
    tries the transcoders last, its config.json inference first (``transcoder_first``).
    Cross-layer transcoders (``clt``) count as transcoders; the caller refuses them."""
    order = ["resid_post", "attn_out", "mlp_out"]
    is_transcoder = "transcoder" in folder or "clt" in folder
    if is_transcoder and transcoder_first:
        return "transcoder"
    found = next((site for site in order if site in folder), None)
    return found or ("transcoder" if is_transcoder else None)


def inferred_config_json(repo: str | None, folder: str) -> dict[str, Any]:
    """The ``config.json`` SAELens infers for a folder that has none, from the repo and folder
    names (``model_name`` and the sites left out where they cannot be told)."""
    raw: dict[str, Any] = {"architecture": "jump_relu"}
    if repo:
        raw["model_name"] = repo.replace("gemma-scope-2", "gemma-3")
    layer, site = layer_of(folder), site_of(folder, transcoder_first=True)
    if site == "transcoder":
        raw["affine_connection"] = "affine" in folder
    if layer is not None and site is not None:
        hf_in, hf_out = _INFERRED_HF_HOOKS[site]
        raw["hf_hook_point_in"] = hf_in.format(layer)
        if hf_out is not None:
            raw["hf_hook_point_out"] = hf_out.format(layer)
    return raw


def saelens_cfg(
    folder: str, config_json: dict[str, Any], shapes: dict[str, list[int]], where: str
) -> dict[str, Any]:
    """The cfg dict SAELens's ``gemma_3`` config function builds for ``folder`` from its
    ``config_json`` (read or inferred) and the tensors' ``shapes`` (raw names), after SAELens's
    v6 defaulting. A folder whose name says no site or layer takes them from config.json's
    ``hf_hook_point_in``; where neither tells, the hook names are ``None``."""
    if config_json.get("architecture") != "jump_relu":
        raise SteerError(
            f"architecture {config_json.get('architecture')!r} is not supported (Gemma Scope 2 "
            "SAEs are 'jump_relu', the only kind SAELens reads)",
            where=where,
        )
    hf_in = config_json.get("hf_hook_point_in")
    site, layer = site_of(folder), layer_of(folder)
    for pattern, hf_site in _HF_SITES:
        if isinstance(hf_in, str) and (m := pattern.search(hf_in)):
            site, layer = site or hf_site, layer if layer is not None else int(m.group(1))
            break
    if "clt" in folder:
        raise SteerError(
            "cross-layer transcoders (clt) are not supported: steer attaches one layer's "
            "transcoder at a time",
            where=where,
        )
    d_in, d_sae = shapes["w_enc"]
    meta: dict[str, Any] = {"model_name": _model_name(config_json.get("model_name"))}
    meta.update(hook_head_index=None, **TRAINING, hf_hook_name=hf_in)
    raw: dict[str, Any] = {"architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae}
    raw.update(dtype="float32", apply_b_dec_to_input=False, normalize_activations="none")
    hook_in, hook_out = SITES[site] if site is not None else (None, None)
    meta["hook_name"] = hook_in.format(layer) if hook_in and layer is not None else None
    if site == "transcoder":
        affine = bool(config_json.get("affine_connection", False))
        raw["architecture"] = "jumprelu_skip_transcoder" if affine else "jumprelu_transcoder"
        raw["d_out"] = shapes["w_dec"][-1]
        meta["hook_name_out"] = hook_out.format(layer) if layer is not None else None
        meta["hf_hook_name_out"] = config_json.get("hf_hook_point_out")
    return {**raw, "reshape_activations": "none", "metadata": meta}


def _model_name(name: Any) -> str | None:
    """config.json's model name as SAELens writes it (google/gemma-3-1b-pt)."""
    if not isinstance(name, str) or not name:
        return None
    name = name if "google" in name else "google/" + name
    name = name.replace("-v3", "-3")
    # The 270m base model's Hugging Face name has no -pt suffix.
    return name.replace("-pt", "") if "270m" in name else name


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the Gemma Scope 2 SAE at ``path`` (a ``params.safetensors`` or its folder),
    from its ``config.json`` (or, without one, what SAELens infers from the names), the
    tensors' header (no weights read), the repo and folder names and ``overrides`` (SAELens cfg
    keys, which win; ``repo_id`` and ``folder`` are hints for where the SAE came from)."""
    file = _params_file(path)
    overrides = dict(overrides)
    hints = {key: overrides.pop(key, None) for key in ("repo_id", "folder")}
    repo_id, repo, folder = locate(file.parent, hints, REPO_NAME, FOLDER_DEPTH)
    shapes = tensor_shapes(file)
    config_file = file.parent / CONFIG
    if config_file.is_file():
        config_json, where = read_json(config_file), str(config_file)
    else:
        config_json, where = inferred_config_json(repo, folder), str(file)
    raw = saelens_cfg(folder, config_json, shapes, where)
    skip = raw["architecture"] == "jumprelu_skip_transcoder"
    if skip != (SKIP in shapes):
        says = "affine_connection true" if skip else "no affine skip connection"
        has = "has no" if skip else "has"
        raise SteerError(f"the config says {says}, but {file.name} {has} {SKIP}", where=where)
    if repo_id is not None:
        raw["metadata"].update(repo_id=repo_id, folder=folder)
    return family_config(raw, overrides, where)


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The SAE's tensors under steer's names, as SAELens loads them: ``w_enc`` -> ``W_enc``,
    ``w_dec`` -> ``W_dec``, and the skip matrix transposed to ``W_skip`` ``[d_out, d_in]``.
    Other tensors in the file are left out, as SAELens leaves them."""
    import safetensors

    file = _params_file(path)
    wanted = {"W_enc": "w_enc", "W_dec": "w_dec", "b_enc": "b_enc", "b_dec": "b_dec"}
    wanted["threshold"] = "threshold"
    with open_safetensors(file) as f:
        keys = set(f.keys())
        require_tensors(dict.fromkeys(keys), RAW_TENSORS, str(file))
        try:
            tensors = {name: f.get_tensor(key) for name, key in wanted.items()}
            if SKIP in keys:
                tensors["W_skip"] = f.get_tensor(SKIP).T.contiguous()
        except (safetensors.SafetensorError, OSError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise SteerError(f"cannot read tensor data ({first})", where=str(file)) from None
    return tensors


def tensor_shapes(file: Path) -> dict[str, list[int]]:
    """``name -> shape`` of the tensors in ``file`` (its header only), after checking that the
    ones Gemma Scope 2 needs are there and 2-D where they must be."""
    if not file.is_file():
        raise SteerError(f"{file.name} is missing", where=str(file.parent))
    shapes = header_shapes(safetensors_header(file))
    require_tensors(shapes, RAW_TENSORS, str(file))
    for key in ("w_enc", "w_dec"):
        shape = shapes[key]
        if not isinstance(shape, list) or len(shape) != 2:
            raise SteerError(f"{key} has shape {shape}, not 2-D", where=str(file))
    return shapes


def _params_file(path: Path) -> Path:
    return path if path.name == PARAMS and not path.is_dir() else path / PARAMS
