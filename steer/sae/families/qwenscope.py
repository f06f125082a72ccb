"""Qwen Scope (``Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50`` and its siblings): one PyTorch file
per layer, ``layer<N>.sae.pt``, holding ``W_enc`` [d_sae, d_in], ``W_dec`` [d_in, d_sae],
``b_enc`` and ``b_dec``.

Read as SAELens 6.54's ``qwen_scope`` loader reads them: TopK SAEs on the residual stream after
block N that do not subtract ``b_dec`` from their input, both matrices transposed to steer's
layout, float32. ``k`` is in the repo's name (``-L0_50``: k=50); the repo id comes from the
release (the ``repo_id`` hint, kept in the metadata) or from the Hugging Face cache folder the
file sits in (``models--Qwen--SAE-Res-...``), else from the repo's own ``config.json`` beside
the file (a full download of the repo), else from a ``k`` override. The sizes come from the
tensors. The file is read with ``torch.load(weights_only=True)`` (never unpickled); the
``.safetensors`` a user converted it to (``layer<N>.sae.safetensors``) is read the same.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import safetensors_header
from steer.sae.families.common import family_config, load_torch_file, require_tensors

NAME = "qwenscope"
TITLE = "Qwen Scope (layer<N>.sae.pt)"

TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")
_FILE = re.compile(r"^layer(\d+)\.sae\.(?:pt|safetensors)$")
# SAELens's reading of the repo name: Qwen/SAE-Res-{model}-W{width}K-L0_{k}.
_REPO = re.compile(r"SAE-Res-(.+)-W(\d+)K-L0_(\d+)")
REPO_CONFIG = "config.json"


def matches(path: Path) -> bool:
    """Whether ``path`` is a file named like Qwen Scope's: ``layer<N>.sae.pt`` (or the
    ``layer<N>.sae.safetensors`` it was converted to)."""
    return _FILE.match(path.name) is not None and not path.is_dir()


def _cache_repo(path: Path) -> str | None:
    """The repo id of the Hugging Face cache folder (``models--Org--Name``) holding ``path``."""
    # abspath, not resolve: a cached file is a symlink to a blob whose name says nothing.
    parts = Path(os.path.abspath(path)).parts
    for i, part in enumerate(parts):
        pieces = part.split("--")
        if len(pieces) == 3 and pieces[0] == "models" and parts[i + 1 : i + 2] == ("snapshots",):
            return f"{pieces[1]}/{pieces[2]}"
    return None


def _shapes(file: Path) -> dict[str, list[int]]:
    """Each tensor's shape: from a ``.safetensors`` header (no torch), else by loading the
    file (tensors only, never unpickling)."""
    if file.suffix == ".safetensors":
        header = safetensors_header(file)
        return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}
    return {k: list(v.shape) for k, v in load_torch_file(file).items() if hasattr(v, "shape")}


def _sizes(file: Path) -> tuple[int, int]:
    """``(d_in, d_sae)`` from ``W_enc`` [d_sae, d_in], after checking the other tensors'
    shapes against it."""
    where = str(file)
    shapes = _shapes(file)
    require_tensors(shapes, TENSORS, where)
    if len(shapes["W_enc"]) != 2:
        raise SteerError(f"W_enc has shape {shapes['W_enc']}, expected [d_sae, d_in]", where=where)
    d_sae, d_in = shapes["W_enc"]
    expected = {"W_dec": [d_in, d_sae], "b_enc": [d_sae], "b_dec": [d_in]}
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise SteerError(
                f"{name} has shape {shapes[name]}, expected {shape} (W_enc is [{d_sae}, {d_in}])",
                where=where,
            )
    return d_in, d_sae


def _repo_config(path: Path) -> dict[str, Any]:
    """The repo's own config.json beside the file (``model_type: topk_sae``, ``k``,
    ``base_model``), when the whole repo was downloaded; ``{}`` otherwise."""
    try:
        data = json.loads((path.parent / REPO_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("model_type") == "topk_sae" else {}


def _k_and_model(path: Path, repo_id: str | None) -> tuple[int | None, str | None]:
    """``k`` and the model from the repo's name, else from its config.json."""
    if repo_id is not None and (m := _REPO.search(repo_id)):
        return int(m.group(3)), f"Qwen/{m.group(1)}"
    config = _repo_config(path)
    k, model = config.get("k"), config.get("base_model")
    return (
        k if isinstance(k, int) and not isinstance(k, bool) else None,
        model if isinstance(model, str) else None,
    )


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the Qwen Scope SAE in file ``path``: SAELens's ``qwen_scope`` config with
    sizes from the tensors and ``k`` from the repo's name (or a ``k`` override)."""
    d_in, d_sae = _sizes(path)
    hinted = overrides.get("repo_id")
    repo_id = hinted if isinstance(hinted, str) else _cache_repo(path)
    k, model = _k_and_model(path, repo_id)
    if overrides.get("k") is None and k is None:
        raise SteerError(
            "the TopK k is not known: Qwen Scope keeps it in the repo's name (SAE-Res-...-L0_50 "
            "is k=50); give `k:` in the SAE entry, or name the SAE by its release",
            where=str(path),
        )
    m = _FILE.match(path.name)
    layer = int(m.group(1)) if m else None
    metadata: dict[str, Any] = {
        "model_name": model,
        "hook_name": f"blocks.{layer}.hook_resid_post" if layer is not None else None,
        "hf_hook_name": f"model.layers.{layer}" if layer is not None else None,
        "context_size": 1024,
        "converted_from": NAME,
    }
    if repo_id is not None:
        metadata["repo_id"] = repo_id
    raw = {
        "architecture": "topk",
        "k": k,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": metadata,
    }
    return family_config(raw, overrides, str(path))


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: ``W_enc`` and ``W_dec`` transposed, as SAELens does."""
    tensors = load_torch_file(path)
    require_tensors(tensors, TENSORS, str(path))
    return {
        "W_enc": tensors["W_enc"].T,
        "W_dec": tensors["W_dec"].T,
        "b_enc": tensors["b_enc"],
        "b_dec": tensors["b_dec"],
    }
