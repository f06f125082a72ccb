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

import os
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import safetensors_header
from steer.sae.families.common import family_config, load_torch_file, require_tensors

NAME = "goodfire"
TITLE = "Goodfire (<model>-SAE-l<layer>.pth)"

ENCODER, ENCODER_BIAS = "encoder_linear.weight", "encoder_linear.bias"
DECODER, DECODER_BIAS = "decoder_linear.weight", "decoder_linear.bias"
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
    """Whether ``path`` is a file named like Goodfire's (``<model>-SAE-l<N>.pth``), other than
    the DeepSeek R1 Distill SAE (deepseek_r1's, in the same naming)."""
    m = _FILE.match(path.name)
    if m is None or path.is_dir():
        return False
    repo = _cache_repo(path)
    if repo is not None and repo.split("/")[0] in ("Goodfire", *_NOT_OUR_ORGS):
        return repo.startswith("Goodfire/")
    return not m["model"].startswith(_NOT_OURS)


def _shapes(file: Path) -> dict[str, list[int]]:
    """Each tensor's shape: from a ``.safetensors`` header (no torch), else by loading the
    file (tensors only, never unpickling)."""
    if file.suffix == ".safetensors":
        header = safetensors_header(file)
        return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}
    return {k: list(v.shape) for k, v in load_torch_file(file).items() if hasattr(v, "shape")}


def _sizes(file: Path) -> tuple[int, int]:
    """``(d_in, d_sae)`` from ``encoder_linear.weight`` [d_sae, d_in], after checking the other
    three tensors' shapes against it."""
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


def _model(path: Path, overrides: dict[str, Any]) -> str | None:
    """The model, from the repo id (the ``repo_id`` hint, or the cache folder) or the file
    name, when it is one of the releases' models."""
    names = [str(overrides.get("repo_id") or ""), _cache_repo(path) or "", path.name]
    for name in names:
        stem = name.split("/")[-1]
        for key, model in MODELS.items():
            if stem.startswith(f"{key}-SAE-"):
                return model
    return None


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the Goodfire SAE in file ``path``: SAELens's ``goodfire`` config with the
    sizes from the tensors and the layer and model from the names."""
    d_in, d_sae = _sizes(path)
    m = _FILE.match(path.name)
    model = _model(path, overrides)
    metadata: dict[str, Any] = {"model_name": model, "converted_from": NAME}
    if m is not None:
        metadata["hook_name"] = f"blocks.{int(m['layer'])}.hook_resid_post"
    if model is not None:
        metadata.update(_TRAINING)
    raw = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": metadata,
    }
    return family_config(raw, overrides, str(path))


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: SAELens's transposes of the Linear weights, cast to
    the config's dtype."""
    tensors = load_torch_file(path)
    require_tensors(tensors, (ENCODER, ENCODER_BIAS, DECODER, DECODER_BIAS), str(path))
    dtype = cfg.torch_dtype
    return {
        "W_enc": tensors[ENCODER].T.to(dtype),
        "W_dec": tensors[DECODER].T.to(dtype),
        "b_enc": tensors[ENCODER_BIAS].to(dtype),
        "b_dec": tensors[DECODER_BIAS].to(dtype),
    }
