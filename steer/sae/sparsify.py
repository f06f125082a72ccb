"""EleutherAI sparsify folders: ``<hookpoint>/cfg.json`` + ``sae.safetensors``, the hookpoint
(``layers.N``, ``layers.N.mlp``) being the folder's name. TopK SAEs, and TopK transcoders
(``transcode: true``, optionally with ``skip_connection``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.cfg_values import bool_value, dtype_value, int_or_none, positive, refuse, require
from steer.sae.config import SAEConfig
from steer.sae.configs import SPARSIFY_WEIGHTS, safetensors_header

_SPARSIFY_HOOKPOINT = re.compile(r"^(?:model\.)?(layers\.\d+(?:\..+)?)$")


def sparsify_config(folder: Path, raw: dict[str, Any], where: str) -> SAEConfig:
    """SAEConfig from a sparsify cfg.json; the hookpoint is the folder's name."""
    d_in = positive(int_or_none(require(raw, "d_in", where), "d_in", where), "d_in", where)
    n = int_or_none(raw.get("num_latents"), "num_latents", where) or 0
    if n < 0:
        raise SteerError(f"num_latents must be a positive integer (or 0), got {n}", where=where)
    if n == 0:  # sparsify: 0 means d_in * expansion_factor
        factor = int_or_none(raw.get("expansion_factor", 32), "expansion_factor", where)
        n = d_in * positive(factor, "expansion_factor", where, why=" when num_latents is 0")
    refuse(raw, "activation", "topk", where)
    for key in ("embed_skip", "gram_lookup"):
        refuse(raw, key, False, where)
    transcode = bool_value(raw, "transcode", False, where)
    skip = bool_value(raw, "skip_connection", False, where)
    if skip and not transcode:
        raise SteerError(
            "skip_connection True is not supported on an autoencoder (only on a transcoder)",
            where=where,
        )
    hookpoint = folder.name
    m = _SPARSIFY_HOOKPOINT.match(hookpoint)
    hf_hook_name = f"model.{m.group(1)}" if m else None
    layer = re.fullmatch(r"layers\.(\d+)", m.group(1)) if m else None
    if transcode:
        return _sparsify_transcoder(folder, raw, d_in, n, skip, hf_hook_name, where)
    return SAEConfig(
        architecture="topk",
        d_in=d_in,
        d_sae=n,
        dtype=_sparsify_dtype(folder),
        apply_b_dec_to_input=True,  # sparsify encodes (x - b_dec) @ encoder.weight.T + bias
        k=int_or_none(raw.get("k"), "k", where),
        hook_name=f"blocks.{layer.group(1)}.hook_resid_post" if layer else None,
        hf_hook_name=hf_hook_name,
        metadata={"converted_from": "sparsify", "sparsify_hookpoint": hookpoint},
    )


def _sparsify_transcoder(
    folder: Path,
    raw: dict[str, Any],
    d_in: int,
    n: int,
    skip: bool,
    hf_hook: str | None,
    where: str,
) -> SAEConfig:
    """A sparsify transcoder: it reads the input of the hookpoint's module (``layers.N.mlp``)
    and predicts its output; the input is not shifted by ``b_dec``, which lives at the output."""
    mlp = re.fullmatch(r"model\.layers\.(\d+)\.mlp", hf_hook or "")
    return SAEConfig(
        architecture="topk_skip_transcoder" if skip else "topk_transcoder",
        d_in=d_in,
        d_sae=n,
        d_out=d_in,
        dtype=_sparsify_dtype(folder),
        apply_b_dec_to_input=False,
        k=int_or_none(raw.get("k"), "k", where),
        hook_name=f"blocks.{mlp.group(1)}.ln2.hook_normalized" if mlp else None,
        hook_name_out=f"blocks.{mlp.group(1)}.hook_mlp_out" if mlp else None,
        hf_hook_name=hf_hook,
        hf_hook_name_out=hf_hook,
        metadata={"converted_from": "sparsify", "sparsify_hookpoint": folder.name},
    )


def _sparsify_dtype(folder: Path) -> str:
    """sparsify keeps the dtype only in the weights; their header says it."""
    weights = folder / SPARSIFY_WEIGHTS
    if weights.is_file():
        tensors = {k: v for k, v in safetensors_header(weights).items() if k != "__metadata__"}
        if tensors:
            return dtype_value(next(iter(tensors.values())).get("dtype"), str(weights))
    return "float32"
