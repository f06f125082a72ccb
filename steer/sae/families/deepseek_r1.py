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

import re
from pathlib import Path
from typing import Any

from steer.sae.config import SAEConfig
from steer.sae.families.common import (
    hf_cache_repo,
    linear_file_config,
    linear_file_sizes,
    linear_file_weights,
)

NAME = "deepseek_r1"
TITLE = "DeepSeek R1 Distill (DeepSeek-R1-Distill-*-SAE-l<N>.pt)"

# The two torch Linear layers: encoder weight and bias, decoder weight and bias.
LINEAR = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
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


def matches(path: Path) -> bool:
    """Whether ``path`` is the DeepSeek R1 Distill SAE's file (by its name, or as a weights
    file in a qresearch repo's cache folder)."""
    if path.is_dir() or path.suffix not in _WEIGHT_SUFFIXES:
        return False
    if _FILE.match(path.name):
        return True
    repo = hf_cache_repo(path)
    return repo is not None and repo.startswith(f"{ORG}/")


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the DeepSeek R1 SAE in file ``path``: SAELens's ``deepseek_r1`` config
    with the sizes from the tensors."""
    sizes = linear_file_sizes(path, LINEAR)
    m = _LAYER.search(path.name)
    metadata: dict[str, Any] = {**_METADATA, "converted_from": NAME}
    if m is not None:
        metadata["hook_name"] = f"blocks.{int(m.group(1))}.hook_resid_post"
    return linear_file_config(path, sizes, overrides, dtype="bfloat16", metadata=metadata)


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: the Linear weights transposed, as SAELens does."""
    return linear_file_weights(path, LINEAR)
