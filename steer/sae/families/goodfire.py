"""Goodfire's SAEs (``Goodfire/Llama-3.1-8B-Instruct-SAE-l19``, ``.../Llama-3.3-70B-Instruct-SAE-l50``):
one PyTorch file per SAE, ``<model>-SAE-l<layer>.pth`` (or ``.pt``), holding two torch Linear
layers: ``encoder_linear.weight`` [d_sae, d_in] and ``.bias``, ``decoder_linear.weight``
[d_in, d_sae] and ``.bias``.

Read as SAELens 6.54's ``goodfire`` loader reads them: a ReLU SAE that does not subtract
``b_dec`` from its input, the weights transposed to steer's layout, in float32 unless a
``dtype`` override says otherwise. SAELens hard-codes each repo's sizes and names; steer takes
the sizes from the tensors, the layer from the file name (``-l19`` ->
``blocks.19.hook_resid_post``) and the model from the file or repo name (or a ``model_name``
override). The file is read with ``torch.load(weights_only=True)`` (never unpickled); the
``.safetensors`` a user converted it to is read the same.
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

NAME = "goodfire"
TITLE = "Goodfire (<model>-SAE-l<layer>.pth)"

# The two torch Linear layers: encoder weight and bias, decoder weight and bias.
LINEAR = (
    "encoder_linear.weight",
    "encoder_linear.bias",
    "decoder_linear.weight",
    "decoder_linear.bias",
)
_FILE = re.compile(r"^(?P<model>.+)-SAE-l(?P<layer>\d+)\.(?:pth|pt|safetensors)$")
# The models of Goodfire's releases SAELens lists (the file and repo names start with them),
# and what SAELens records about their training data.
MODELS = {
    "Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "Llama-3.3-70B-Instruct": "meta-llama/Llama-3.3-70B-Instruct",
}
_TRAINING = {"dataset_path": "lmsys/lmsys-chat-1m"}
# deepseek_r1's release is named like Goodfire's: DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt.
_NOT_OURS = ("DeepSeek-R1-Distill-",)
_NOT_OUR_ORGS = ("qresearch",)


def matches(path: Path) -> bool:
    """Whether ``path`` is a file named like Goodfire's (``<model>-SAE-l<N>.pth``), other than
    the DeepSeek R1 Distill SAE (deepseek_r1's, in the same naming)."""
    m = _FILE.match(path.name)
    if m is None or path.is_dir():
        return False
    repo = hf_cache_repo(path)
    if repo is not None and repo.split("/")[0] in ("Goodfire", *_NOT_OUR_ORGS):
        return repo.startswith("Goodfire/")
    return not m["model"].startswith(_NOT_OURS)


def _model(path: Path, overrides: dict[str, Any]) -> str | None:
    """The model, from the repo id (the ``repo_id`` hint, or the cache folder) or the file
    name, when it is one of the releases' models."""
    names = [str(overrides.get("repo_id") or ""), hf_cache_repo(path) or "", path.name]
    for name in names:
        stem = name.split("/")[-1]
        for key, model in MODELS.items():
            if stem.startswith(f"{key}-SAE-"):
                return model
    return None


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the Goodfire SAE in file ``path``: SAELens's ``goodfire`` config with the
    sizes from the tensors and the layer and model from the names."""
    sizes = linear_file_sizes(path, LINEAR)
    m = _FILE.match(path.name)
    model = _model(path, overrides)
    metadata: dict[str, Any] = {"model_name": model, "converted_from": NAME}
    if m is not None:
        metadata["hook_name"] = f"blocks.{int(m['layer'])}.hook_resid_post"
    if model is not None:
        metadata.update(_TRAINING)
    return linear_file_config(path, sizes, overrides, dtype="float32", metadata=metadata)


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: SAELens's transposes of the Linear weights, cast to
    the config's dtype."""
    return linear_file_weights(path, LINEAR, cfg.torch_dtype)
