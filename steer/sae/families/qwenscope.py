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
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.families.common import (
    hf_cache_repo,
    linear_file_config,
    linear_file_sizes,
    linear_file_weights,
)

NAME = "qwenscope"
TITLE = "Qwen Scope (layer<N>.sae.pt)"

# Stored as torch Linear layers store them (W_enc [d_sae, d_in]): encoder weight and bias,
# decoder weight and bias.
LINEAR = ("W_enc", "b_enc", "W_dec", "b_dec")
_FILE = re.compile(r"^layer(\d+)\.sae\.(?:pt|safetensors)$")
# SAELens's reading of the repo name: Qwen/SAE-Res-{model}-W{width}K-L0_{k}.
_REPO = re.compile(r"SAE-Res-(.+)-W(\d+)K-L0_(\d+)")
REPO_CONFIG = "config.json"


def matches(path: Path) -> bool:
    """Whether ``path`` is a file named like Qwen Scope's: ``layer<N>.sae.pt`` (or the
    ``layer<N>.sae.safetensors`` it was converted to)."""
    return _FILE.match(path.name) is not None and not path.is_dir()


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
    sizes = linear_file_sizes(path, LINEAR)
    hinted = overrides.get("repo_id")
    repo_id = hinted if isinstance(hinted, str) else hf_cache_repo(path)
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
    return linear_file_config(
        path, sizes, overrides, architecture="topk", k=k, dtype="float32", metadata=metadata
    )


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: ``W_enc`` and ``W_dec`` transposed, as SAELens does."""
    return linear_file_weights(path, LINEAR)
