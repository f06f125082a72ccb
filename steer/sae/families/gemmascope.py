"""GemmaScope (Gemma 2) SAEs and transcoders: one ``params.npz`` per SAE, as in
``google/gemma-scope-2b-pt-res`` at ``layer_20/width_16k/average_l0_71/params.npz``.

The arrays are ``W_enc`` ``[d_in, d_sae]``, ``W_dec`` ``[d_sae, d_out]``, ``b_enc``, ``b_dec``
and ``threshold`` (JumpReLU), already in steer's layouts. The site and model are in the repo's
name (``...-res``, ``-mlp``, ``-att``, ``-transcoders``; ``2b``/``9b``/``27b``, ``-it``) and
the layer in the folder's; this module reads them as SAELens 6's ``gemma_2`` and
``gemma_2_transcoder`` loaders do, and the sizes from the arrays' headers.

It also holds what :mod:`~steer.sae.families.gemmascope2` shares: finding the repo and the
folder inside it from a path (:func:`locate`).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.families.common import family_config, hf_cache_entry, require_tensors

NAME = "gemmascope"
TITLE = "GemmaScope (params.npz)"
PARAMS = "params.npz"

# A folder named after a GemmaScope repo or release: gemma-scope-2b-pt-res,
# gemma-scope-9b-pt-mlp-canonical, gemma-scope-2b-pt-transcoders.
REPO_NAME = re.compile(r"^gemma-scope-\d+b-(?:pt|it)-(?:res|mlp|att|transcoders)")
# The folders of one SAE inside a repo: layer_20/width_16k/average_l0_71.
FOLDER_DEPTH = 3
# SAELens's tables, in its order (the first key found in the repo id wins).
MODELS = (
    ("2b-it", "gemma-2-2b-it"),
    ("9b-it", "gemma-2-9b-it"),
    ("27b-it", "gemma-2-27b-it"),
    ("2b", "gemma-2-2b"),
    ("9b", "gemma-2-9b"),
    ("27b", "gemma-2-27b"),
)
# What SAELens's gemma_2 loaders record about the training data.
TRAINING = {
    "prepend_bos": True,
    "dataset_path": "monology/pile-uncopyrighted",
    "context_size": 1024,
}
_LAYER = re.compile(r"layer_(\d+)")
_SAE_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
# The transcoder loader's spellings (compared lower-cased), as SAELens's.
_TRANSCODER_KEYS = {
    "w_enc": "W_enc", "wenc": "W_enc", "w_e": "W_enc",
    "w_dec": "W_dec", "wdec": "W_dec", "w_d": "W_dec",
    "b_enc": "b_enc", "benc": "b_enc", "b_e": "b_enc",
    "b_dec": "b_dec", "bdec": "b_dec", "b_d": "b_dec",
    "threshold": "threshold", "scaling_factor": "scaling_factor",
}  # fmt: skip
# zlib cannot expand data more than about 1032-fold: a zip directory claiming more lies.
_MAX_DEFLATE_RATIO = 1100


def matches(path: Path) -> bool:
    """``path`` is a ``params.npz`` file or a folder holding one."""
    return (path.name == PARAMS and path.is_file()) or (path.is_dir() and (path / PARAMS).is_file())


def locate(
    sae_dir: Path, hints: dict[str, Any], repo_name: re.Pattern[str], depth: int
) -> tuple[str | None, str | None, str]:
    """``(repo_id, repo, folder)`` of the SAE in folder ``sae_dir``: the Hugging Face repo id
    when known for sure (the ``repo_id`` hint, or the ``models--org--name`` folder of the
    Hugging Face cache), the repo name to read the site and model from (that id, else an
    ancestor folder whose name starts like ``repo_name``), and the SAE's folder inside the repo
    (the ``folder`` hint, the path under the cache's snapshot or the repo-named folder, else
    the last ``depth`` folders)."""
    # abspath, not resolve: a cached file is a symlink to a blob whose name says nothing.
    parts = Path(os.path.abspath(sae_dir)).parts
    repo_id, folder = hf_cache_entry(sae_dir) or (None, None)
    repo = repo_id
    if repo is None:
        for i in reversed(range(len(parts))):
            if m := repo_name.match(parts[i]):
                # A release's name (gemma-scope-9b-pt-mlp-canonical) starts with its repo's.
                repo, folder = f"google/{m.group(0)}", "/".join(parts[i + 1 :])
                break
    if hints.get("repo_id"):
        repo_id = repo = str(hints["repo_id"])
    if hints.get("folder"):
        folder = str(hints["folder"]).strip("/")
    if folder is None:
        folder = "/".join(parts[-depth:])
    return repo_id, repo, folder


def layer_of(*names: str | None) -> int | None:
    """The ``N`` of the first ``layer_N`` in ``names``, as SAELens reads it (``l0`` in
    ``average_l0_71`` is no layer)."""
    for name in names:
        if name and (m := _LAYER.search(name)) is not None:
            return int(m.group(1))
    return None


def saelens_cfg(
    repo: str | None, folder: str, shapes: dict[str, tuple[int, ...]], *, transcoder: bool
) -> dict[str, Any]:
    """The cfg dict SAELens's ``gemma_2`` (or ``gemma_2_transcoder``) config function builds
    for ``folder`` of ``repo``, after its v6 defaulting, with the sizes from ``shapes`` (the
    arrays' shapes under steer's names). Where SAELens would fail for want of a site, layer or
    model, the hook names or model name are ``None`` instead."""
    repo = repo or ""
    d_in, d_sae = shapes["W_enc"]
    model = next((name for key, name in MODELS if key in repo), None)
    layer = layer_of(folder, repo) if transcoder else layer_of(folder)
    meta: dict[str, Any] = {"model_name": model, "hook_head_index": None, **TRAINING}
    raw: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32"}
    raw.update(apply_b_dec_to_input=False, normalize_activations="none")
    if transcoder:
        raw.update(architecture="jumprelu_transcoder", d_out=shapes["W_dec"][1])
        if layer is not None:
            meta["hook_name"] = f"blocks.{layer}.ln2.hook_normalized"
            meta["hook_name_out"] = f"blocks.{layer}.hook_mlp_out"
        return {**raw, "reshape_activations": "none", "metadata": meta}
    embedding = "embedding" in folder
    if layer is None and embedding:
        layer = 0  # as SAELens: the embedding SAEs are "layer 0"
    hook = None
    if "res" in repo and embedding:
        hook = "hook_embed"
    elif layer is not None and "res" in repo:
        hook = f"blocks.{layer}.hook_resid_post"
    elif layer is not None and "mlp" in repo:
        hook = f"blocks.{layer}.hook_mlp_out"
    elif layer is not None and "att" in repo:
        hook = f"blocks.{layer}.attn.hook_z"
    meta["hook_name"] = hook
    if embedding:
        # SAELens rescales these weights by sqrt(d_in) when it loads them (read_tensors).
        meta["gemmascope_embedding"] = True
    # SAELens's v6 defaulting marks a hook_z SAE so that it flattens the attention heads.
    reshape = "hook_z" if hook and "hook_z" in hook else "none"
    return {**raw, "architecture": "jumprelu", "reshape_activations": reshape, "metadata": meta}


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the GemmaScope SAE at ``path`` (a ``params.npz`` or its folder), from the
    arrays' headers (no weights read), the repo and folder names and ``overrides`` (SAELens
    cfg keys, which win; ``repo_id`` and ``folder`` are hints for where the SAE came from)."""
    file = _params_file(path)
    overrides = dict(overrides)
    hints = {key: overrides.pop(key, None) for key in ("repo_id", "folder")}
    repo_id, repo, folder = locate(file.parent, hints, REPO_NAME, FOLDER_DEPTH)
    transcoder = "transcoder" in (repo or "") or overrides.get("architecture") == (
        "jumprelu_transcoder"
    )
    headers = npz_headers(file)
    shapes = {name: headers[key][0] for key, name in _renamed(headers, transcoder, file).items()}
    require_tensors(shapes, _SAE_TENSORS, str(file))
    for key in ("W_enc", "W_dec"):
        if len(shapes[key]) != 2:
            raise SteerError(f"{key} has shape {list(shapes[key])}, not 2-D", where=str(file))
    raw = saelens_cfg(repo, folder, shapes, transcoder=transcoder)
    if repo_id is not None:
        raw["metadata"].update(repo_id=repo_id, folder=folder)
    return family_config(raw, overrides, str(file))


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The SAE's tensors under steer's names, as SAELens loads them: float32, ``w_*`` keys
    renamed, an all-ones ``scaling_factor`` dropped, and an embedding SAE's encoder divided
    and decoder multiplied by ``sqrt(d_in)``."""
    import torch

    file = _params_file(path)
    arrays = read_npz(file)
    renamed = _renamed(arrays, cfg.is_transcoder, file)
    tensors = {name: torch.tensor(arrays[key]).to(torch.float32) for key, name in renamed.items()}
    scale = tensors.pop("scaling_factor", None)
    # SAELens drops an all-ones scaling_factor and refuses any other (it would need
    # finetuning_scaling_factor, which SAELens 6 no longer runs).
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise SteerError(
            "scaling_factor is not all ones (a fine-tuned decoder scale, which SAELens "
            "refuses too)",
            where=str(file),
        )
    if cfg.metadata.get("gemmascope_embedding") and {"W_enc", "W_dec"} <= set(tensors):
        # GemmaScope trained the embedding SAEs on embeddings scaled by sqrt(d_model);
        # SAELens folds that in with these very operations (numpy's sqrt, float32 tensors).
        tensors["W_enc"] = tensors["W_enc"] / np.sqrt(cfg.d_in)
        tensors["W_dec"] = tensors["W_dec"] * np.sqrt(cfg.d_in)
    return tensors


def _params_file(path: Path) -> Path:
    return path if path.name == PARAMS and not path.is_dir() else path / PARAMS


def _renamed(arrays: dict[str, Any], transcoder: bool, file: Path) -> dict[str, str]:
    """Array key -> steer's name, as SAELens renames them; keys it would not load are refused."""
    names: dict[str, str] = {}
    for key in arrays:
        if transcoder:
            name = _TRANSCODER_KEYS.get(key.lower())
        else:
            name = "W_" + key[2:] if key.startswith("w_") else key
            name = name if name in (*_SAE_TENSORS, "scaling_factor") else None
        if name is None:
            raise SteerError(f"unexpected array {key!r} (not a GemmaScope weight)", where=str(file))
        if name in names.values():
            other = next(k for k, v in names.items() if v == name)
            raise SteerError(f"holds both {other!r} and {key!r} (one {name})", where=str(file))
        names[key] = name
    return names


def npz_headers(file: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``name -> (shape, dtype)`` of each array in the ``.npz`` ``file``, from the ``.npy``
    headers inside it (no array data read); a file that is no readable archive of float
    arrays, or whose arrays are larger than their stored data, is a one-line SteerError."""
    if not file.is_file():
        raise SteerError(f"{file.name} is missing", where=str(file.parent))
    on_disk = file.stat().st_size
    headers = {}
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not a .npy array")
                name = info.filename.removesuffix(".npy")
                if info.compress_size > on_disk or info.file_size > _MAX_DEFLATE_RATIO * max(
                    info.compress_size, 1
                ):
                    raise ValueError(f"the zip directory's sizes for {name!r} are impossible")
                with archive.open(info) as fh:
                    shape, dtype = _npy_header(fh)
                    need = fh.tell() + math.prod(shape) * dtype.itemsize
                if dtype.kind != "f":
                    raise ValueError(f"array {name!r} has dtype {dtype}, not a float dtype")
                if info.file_size < need:
                    raise ValueError(f"array {name!r} is truncated")
                headers[name] = (tuple(int(n) for n in shape), dtype)
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"not a readable .npz file ({reason})", where=str(file)) from None
    return headers


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return shape, dtype


def read_npz(file: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` ``file`` (never unpickling), after :func:`npz_headers` has
    checked that each fits its stored data; a corrupt file is a one-line SteerError."""
    npz_headers(file)
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"cannot read the arrays ({reason})", where=str(file)) from None
