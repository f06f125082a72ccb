"""Llama Scope (OpenMOSS): JumpReLU SAEs in two layouts, read as SAELens 6.54 reads them.

* Llama Scope (``fnlp/Llama3_1-8B-Base-LX{R,A,M}-{8,32}x``, SAELens's ``llama_scope``):
  ``<name>/hyperparams.json`` and ``<name>/checkpoints/final.safetensors`` (bfloat16). One scalar
  ``jump_relu_threshold`` for every feature, which SAELens multiplies by the input scale
  ``sqrt(d_model) / dataset_average_activation_norm.in``.
* Llama Scope R1 Distill (``fnlp/Llama-Scope-R1-Distill``, ``llama_scope_r1_distill``):
  ``<name>/config.json`` and ``<name>/sae_weights.safetensors``, with a per-feature
  ``log_jumprelu_threshold`` (the threshold is its exp, not rescaled).

Both encode ``x`` without subtracting ``b_dec`` and were trained on inputs scaled to norm
``sqrt(d_model)`` (``normalize_activations: expected_average_only_in``); that factor is folded
into the weights when they load (:meth:`steer.sae.base.SAE.fold_for_inference`, as SAELens's
``fold_activation_norm_scaling_factor``). SAELens takes the factor from its release list
(``norm_scaling_factor``; an override wins here too) and, without one, skips the folding and
runs the SAE on unscaled inputs. steer computes the factor instead, the way the release list's
values were made (``sqrt(d_model) / average input norm``, from hyperparams.json or from the
``dataset_average_activation_norm.<hook>`` tensor the R1 files carry), so a folder copied out
of the release loads the same. A transcoder (``hook_point_in`` != ``hook_point_out``, the
``LXTC`` repos) is refused: SAELens would read it as an SAE with one input scale, which its
output does not share.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import CFG_FILENAME, read_json, safetensors_header
from steer.sae.families.common import (
    family_config,
    header_shapes,
    linear_sizes,
    linear_weights,
    load_required_tensors,
)

NAME = "llamascope"
TITLE = "Llama Scope (hyperparams.json + checkpoints/final.safetensors; R1 Distill)"

HYPERPARAMS = "hyperparams.json"
CHECKPOINT = ("checkpoints", "final.safetensors")
R1_CONFIG = "config.json"
R1_WEIGHTS = "sae_weights.safetensors"
NORM_TENSOR = "dataset_average_activation_norm."
LINEAR = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
R1_THRESHOLD = "log_jumprelu_threshold"

# What SAELens's config getters hard-code for these releases. SAELens names Llama-3.1-8B for the
# R1 Distill SAEs too; they were trained on DeepSeek-R1-Distill-Llama-8B (its release list's
# `model`), which is what steer records.
_V1_METADATA = {"model_name": "meta-llama/Llama-3.1-8B", "dataset_path": "cerebras/SlimPajama-627B"}
_R1_METADATA = {
    "model_name": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "dataset_path": "cerebras/SlimPajama-627B",
}
_SCALAR_FORMATS = {"F64": ("<d", 8), "F32": ("<f", 4), "F16": ("<e", 2), "BF16": ("<f", 2)}


def _locate(path: Path) -> tuple[str, Path, Path] | None:
    """``(kind, config file, weights file)`` of a Llama Scope folder (or of its weights file
    given directly): kind ``"v1"`` (hyperparams.json) or ``"r1"`` (R1 Distill); ``None`` if
    ``path`` is in neither layout. Decided from names alone."""
    if path.is_dir():
        folder = path
    elif path.name == CHECKPOINT[1] and path.parent.name == CHECKPOINT[0]:
        folder = path.parent.parent
    elif path.name == R1_WEIGHTS:
        folder = path.parent
    else:
        return None
    if (folder / HYPERPARAMS).is_file():
        return "v1", folder / HYPERPARAMS, folder.joinpath(*CHECKPOINT)
    # config.json beside sae_weights.safetensors, where SAELens would have cfg.json.
    r1 = (folder / R1_CONFIG).is_file() and (folder / R1_WEIGHTS).is_file()
    if r1 and not (folder / CFG_FILENAME).is_file():
        return "r1", folder / R1_CONFIG, folder / R1_WEIGHTS
    return None


def matches(path: Path) -> bool:
    """Whether ``path`` is a Llama Scope folder (``hyperparams.json``), a Llama Scope R1
    Distill folder (``config.json`` + ``sae_weights.safetensors``), or the weights file of one."""
    return _locate(path) is not None


def _number(config: dict[str, Any], key: str, where: Path, label: str = "") -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SteerError(f"{label or key} must be a number, got {value!r}", where=str(where))
    return float(value)


def _scalar(weights: Path, header: dict[str, Any], key: str) -> float:
    """The value of the one-element tensor ``key`` of a safetensors file, read from its bytes
    (no torch needed to read a config)."""
    entry = header[key] if isinstance(header[key], dict) else {}
    fmt = _SCALAR_FORMATS.get(entry.get("dtype"))
    start, end = entry.get("data_offsets", (0, 0))
    if fmt is None or end - start != fmt[1]:
        raise SteerError(f"{key} is not a one-element float tensor", where=str(weights))
    with open(weights, "rb") as fh:
        fh.seek(8 + int.from_bytes(fh.read(8), "little") + start)
        raw = fh.read(fmt[1])
    if len(raw) != fmt[1]:
        raise SteerError(f"{key}'s data is past the end of the file", where=str(weights))
    if entry["dtype"] == "BF16":  # bfloat16 is the high half of a float32
        raw = b"\x00\x00" + raw
    return struct.unpack(fmt[0], raw)[0]


def _input_norm(
    kind: str, config: dict[str, Any], files: tuple[Path, Path], header: dict[str, Any]
) -> float | None:
    """The average norm of the SAE's training inputs: hyperparams.json's
    ``dataset_average_activation_norm.in``, else (R1) the weights' ``...norm.<hook_point_in>``
    tensor; ``None`` when an R1 folder has neither (the release list's factor is then needed)."""
    norms = config.get("dataset_average_activation_norm")
    key = f"{NORM_TENSOR}{config.get('hook_point_in')}"
    if isinstance(norms, dict) and "in" in norms:
        norm, where = _number(norms, "in", files[0], "dataset_average_activation_norm.in"), files[0]
    elif kind == "v1":
        raise SteerError("dataset_average_activation_norm.in is missing", where=str(files[0]))
    elif key in header:
        norm, where = _scalar(files[1], header, key), files[1]
    else:
        return None
    if not 0 < norm < float("inf"):
        raise SteerError(f"the average input norm must be positive, got {norm}", where=str(where))
    return norm


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the Llama Scope SAE at ``path``, as SAELens's ``llama_scope`` and
    ``llama_scope_r1_distill`` config getters build it, with sizes from the weights file's
    header and the input scale computed when the release list gives none."""
    located = _locate(path)
    if located is None:
        raise SteerError("not a Llama Scope folder (no hyperparams.json)", where=str(path))
    kind, config_file, weights = located
    config = read_json(config_file)
    if not weights.is_file():
        raise SteerError(f"weights file {weights.name} is missing", where=str(weights.parent))
    header = safetensors_header(weights)
    d_in, d_sae = linear_sizes(header_shapes(header), LINEAR, str(weights))
    _check_sizes(kind, config, d_in, d_sae, config_file)
    hook_in, hook_out = config.get("hook_point_in"), config.get("hook_point_out")
    if not isinstance(hook_in, str):
        raise SteerError(
            f"hook_point_in must be a hook name, got {hook_in!r}", where=str(config_file)
        )
    if hook_out not in (None, hook_in):
        raise SteerError(
            f"is a transcoder ({hook_in} -> {hook_out}); steer reads Llama Scope SAEs, whose "
            "input and output are one site",
            where=str(config_file),
        )
    norm = _input_norm(kind, config, (config_file, weights), header)
    factor = d_in**0.5 / norm if norm is not None else None
    metadata = {**(_V1_METADATA if kind == "v1" else _R1_METADATA), "hook_name": hook_in}
    if kind == "v1":  # SAELens scales the scalar threshold by the input scale it folds
        threshold = _number(config, "jump_relu_threshold", config_file) * factor
        metadata["jump_relu_threshold"] = threshold
    raw = {
        "architecture": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "bfloat16" if kind == "v1" else "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "expected_average_only_in",
        "norm_scaling_factor": factor,
        "metadata": {**metadata, "context_size": 1024, "converted_from": NAME},
    }
    return family_config(raw, overrides, str(config_file))


def _check_sizes(kind: str, config: dict[str, Any], d_in: int, d_sae: int, file: Path) -> None:
    """Refuse a config whose sizes are not the weights' (a file from another SAE)."""
    claimed = {"d_model": d_in, "d_sae": d_sae}
    if "expansion_factor" in config and kind == "r1":  # SAELens: d_sae = d_model * factor
        claimed["expansion_factor"] = d_sae / d_in
    for key, value in claimed.items():
        if key in config and config[key] != value:
            raise SteerError(
                f"{key} is {config[key]!r}, but the weights are d_in={d_in}, d_sae={d_sae}",
                where=str(file),
            )


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names: SAELens's key renames and transposes, in the config's
    dtype (cast first, as SAELens loads them); the threshold is the scaled scalar for every
    feature (Llama Scope) or ``exp(log_jumprelu_threshold)`` (R1 Distill)."""
    import torch

    located = _locate(path)
    if located is None:
        raise SteerError("not a Llama Scope folder (no hyperparams.json)", where=str(path))
    kind, _, weights = located
    tensors = load_required_tensors(weights, LINEAR + ((R1_THRESHOLD,) if kind == "r1" else ()))
    dtype = cfg.torch_dtype
    out = linear_weights(tensors, LINEAR, dtype)
    if kind == "r1":  # cast first, as SAELens loads it, then exp
        out["threshold"] = tensors[R1_THRESHOLD].to(dtype).exp()
        return out
    threshold = cfg.metadata.get("jump_relu_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise SteerError(
            f"jump_relu_threshold must be a number, got {threshold!r}", where=str(path)
        )
    # As SAELens: ones in the SAE's dtype times the Python float, one rounding.
    out["threshold"] = torch.ones(cfg.d_sae, dtype=dtype) * threshold
    return out
