"""qresearch's DeepSeek R1 Distill SAE (``qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19``): one
PyTorch file, ``DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt``, holding two torch Linear layers:
``encoder.weight`` [d_sae, d_in] and ``.bias``, ``decoder.weight`` [d_in, d_sae] and ``.bias``.

Read as SAELens 6.54's ``deepseek_r1`` loader reads it: a ReLU SAE that does not subtract
``b_dec`` from its input, on the residual stream after the block the file name gives (``l19``),
weights transposed to steer's layout, bfloat16. The sizes come from the tensors (SAELens
hard-codes 4096 x 65536). The file is read with ``torch.load(weights_only=True)`` (never
unpickled); the ``.safetensors`` a user converted it to is read the same.

The file name ``<model>-SAE-l<N>.pt`` is also Goodfire's pattern, so this family claims only
``DeepSeek-R1-Distill-...`` files and any ``.pt`` in qresearch's Hugging Face cache folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import safetensors_header
from steer.sae.families.common import family_config, load_torch_file, require_tensors

NAME = "deepseek_r1"
TITLE = "DeepSeek R1 Distill (DeepSeek-R1-Distill-*-SAE-l<N>.pt)"

ENCODER, ENCODER_BIAS = "encoder.weight", "encoder.bias"
DECODER, DECODER_BIAS = "decoder.weight", "decoder.bias"
_FILE = re.compile(r"^DeepSeek-R1-Distill-.+-SAE-l\d+\.(?:pt|pth|safetensors)$")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
ORG = "qresearch"
# SAELens reads the layer with this search of the file name (the first "l" before digits).
_LAYER = re.compile(r"l(\d+)")
# What SAELens's config getter records about the SAE.
_METADATA = {
    "model_name": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "dataset_path": "lmsys/lmsys-chat-1m",
    "context_size": 1024,
}


def _cache_repo(path: Path) -> str | None:
    """The repo id of the Hugging Face cache folder (``models--Org--Name``) holding ``path``."""
    # abspath, not resolve: a cached file is a symlink to a blob whose name says nothing.
    parts = Path(os.path.abspath(path)).parts
    for i, part in enumerate(parts):
        pieces = part.split("--")
        if len(pieces) == 3 and pieces[0] == "models" and parts[i + 1 : i + 2] == ("snapshots",):
            return f"{pieces[1]}/{pieces[2]}"
    return None


def matches(path: Path) -> bool:
    """Whether ``path`` is the DeepSeek R1 Distill SAE's file (by its name, or as a weights
    file in a qresearch repo's cache folder)."""
    if path.is_dir() or path.suffix not in _WEIGHT_SUFFIXES:
        return False
    if _FILE.match(path.name):
        return True
    repo = _cache_repo(path)
    return repo is not None and repo.startswith(f"{ORG}/")


def _shapes(file: Path) -> dict[str, list[int]]:
    """Each tensor's shape: from a ``.safetensors`` header (no torch), else by loading the
    file (tensors only, never unpickling)."""
    if file.suffix == ".safetensors":
        header = safetensors_header(file)
        return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}
    return {k: list(v.shape) for k, v in load_torch_file(file).items() if hasattr(v, "shape")}


def _sizes(file: Path) -> tuple[int, int]:
    """``(d_in, d_sae)`` from ``encoder.weight`` [d_sae, d_in], after checking the other three
    tensors' shapes against it."""
    where = str(file)
    shapes = _shapes(file)
    require_tensors(shapes, (ENCODER, ENCODER_BIAS, DECODER, DECODER_BIAS), where)
    if len(shapes[ENCODER]) != 2:
        raise SteerError(
            f"{ENCODER} has shape {shapes[ENCODER]}, expected [d_sae, d_in]", where=where
        )
    d_sae, d_in = shapes[ENCODER]
    expected = {ENCODER_BIAS: [d_sae], DECODER: [d_in, d_sae], DECODER_BIAS: [d_in]}
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise SteerError(
                f"{name} has shape {shapes[name]}, expected {shape} ({ENCODER} is "
                f"[{d_sae}, {d_in}])",
                where=where,
            )
    return d_in, d_sae


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the DeepSeek R1 SAE in file ``path``: SAELens's ``deepseek_r1`` config
    with the sizes from the tensors."""
    d_in, d_sae = _sizes(path)
    m = _LAYER.search(path.name)
    metadata: dict[str, Any] = {**_METADATA, "converted_from": NAME}
    if m is not None:
        metadata["hook_name"] = f"blocks.{int(m.group(1))}.hook_resid_post"
    raw = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "bfloat16",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": metadata,
    }
    return family_config(raw, overrides, str(path))


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: the Linear weights transposed, as SAELens does."""
    tensors = load_torch_file(path)
    require_tensors(tensors, (ENCODER, ENCODER_BIAS, DECODER, DECODER_BIAS), str(path))
    return {
        "W_enc": tensors[ENCODER].T,
        "W_dec": tensors[DECODER].T,
        "b_enc": tensors[ENCODER_BIAS],
        "b_dec": tensors[DECODER_BIAS],
    }
