"""dictionary_learning (saprmarks/dictionary_learning; SAEBench's and andyrdt's releases):
``<folder>/ae.pt`` (a state dict) and ``<folder>/config.json`` (``trainer.dict_class``,
``activation_dim``, ``dict_size``, ``layer``, ``lm_name``), as in
``canrager/lm_sae/<sweep>/resid_post_layer_3/trainer_0``.

Read as SAELens 6.54's ``dictionary_learning_1`` loader reads them, per ``dict_class``:

* ``AutoEncoder``: standard (``bias`` is b_dec);
* ``AutoEncoderTopK``: topk with the trainer's ``k`` (its stored ``threshold`` is not used);
* ``GatedAutoEncoder``: gated (``decoder_bias``, ``gate_bias``, ``mag_bias``, ``r_mag``);
* ``JumpReluAutoEncoder``: jumprelu that does not subtract b_dec from its input;
* ``BatchTopKSAE``, ``MatryoshkaBatchTopKSAE``: jumprelu with the learned inference threshold
  (one number for every feature).

Any other class is refused by name (SAELens would read it as a ReLU SAE). ``ae.pt`` is read
with ``torch.load(weights_only=True)``; the ``ae.safetensors`` a user converted it to is read
the same. The hook is ``blocks.<layer>.hook_resid_post``, as SAELens has it, except where the
trainer's ``submodule_name`` says the attention or MLP output (``attn_out_layer_3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import read_json
from steer.sae.families.common import (
    family_config,
    load_torch_file,
    require_tensors,
    tensor_shapes_in,
)

NAME = "dictionary_learning"
TITLE = "dictionary_learning (ae.pt + config.json)"
CONFIG = "config.json"
WEIGHTS = ("ae.safetensors", "ae.pt")  # a converted file first: it needs no unpickling

# dict_class -> (architecture, whether the encoder subtracts b_dec), as SAELens maps them.
DICT_CLASSES = {
    "AutoEncoder": ("standard", True),
    "AutoEncoderTopK": ("topk", True),
    "GatedAutoEncoder": ("gated", True),
    "JumpReluAutoEncoder": ("jumprelu", False),
    "BatchTopKSAE": ("jumprelu", True),
    "MatryoshkaBatchTopKSAE": ("jumprelu", True),
}
# steer's tensor -> the names dictionary_learning stores it under, in SAELens's order of trial.
SOURCES = {
    "b_dec": ("b_dec", "bias", "decoder_bias"),
    "b_enc": ("b_enc", "encoder.bias"),
    "b_gate": ("gate_bias",),
    "b_mag": ("mag_bias",),
    "r_mag": ("r_mag",),
    "threshold": ("threshold",),
}
_PARAMS = {
    "standard": ("b_enc", "b_dec"),
    "topk": ("b_enc", "b_dec"),
    "gated": ("b_dec", "b_gate", "b_mag", "r_mag"),
    "jumprelu": ("b_enc", "b_dec", "threshold"),
}
# The trainer's submodule_name prefix -> the TransformerLens hook of that layer's site.
_SITES = {"resid_post": "hook_resid_post", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
# What SAELens's config getter records about the training data.
_TRAINING = {"dataset_path": "monology/pile-uncopyrighted"}


def _locate(path: Path) -> tuple[Path, Path] | None:
    """``(folder, weights file)`` of a dictionary_learning folder or of its ``ae.pt`` given
    directly; ``None`` if ``path`` is neither. Names alone decide."""
    if path.is_dir():
        found = [path / name for name in WEIGHTS if (path / name).is_file()]
        return (path, found[0]) if found else None
    return (path.parent, path) if path.name in WEIGHTS else None


def matches(path: Path) -> bool:
    """Whether ``path`` is a folder holding ``ae.pt`` (or ``ae.safetensors``), or that file."""
    return _locate(path) is not None


def _trainer(folder: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """config.json's ``trainer`` and ``buffer`` sections, and the file."""
    file = folder / CONFIG
    if not file.is_file():
        raise SteerError(
            f"{CONFIG} is missing (dictionary_learning keeps the SAE's class and layer there)",
            where=str(folder),
        )
    config = read_json(file)
    trainer, buffer = config.get("trainer"), config.get("buffer") or {}
    if not isinstance(trainer, dict) or not isinstance(buffer, dict):
        raise SteerError(
            "needs a 'trainer' section (dictionary_learning's config)", where=str(file)
        )
    return trainer, buffer, file


def _sizes(shapes: dict[str, Any], weights: Path) -> tuple[int, int]:
    """``(d_in, d_sae)``: from ``W_enc`` [d_in, d_sae] where the class stores it so, else from
    ``encoder.weight`` [d_sae, d_in] (a torch Linear)."""
    where = str(weights)
    if "W_enc" in shapes:
        name, d_in_first = "W_enc", True
    else:
        require_tensors(shapes, ("encoder.weight",), where)
        name, d_in_first = "encoder.weight", False
    if not isinstance(shapes[name], list) or len(shapes[name]) != 2:
        raise SteerError(f"{name} has shape {shapes[name]}, expected a matrix", where=where)
    a, b = shapes[name]
    return (a, b) if d_in_first else (b, a)


def _hook(trainer: dict[str, Any]) -> tuple[str | None, int | None]:
    """``(hook name, layer)`` from the trainer's ``layer`` and ``submodule_name``."""
    layer = trainer.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, int):
        return None, None
    submodule = str(trainer.get("submodule_name") or "")
    site = next((hook for key, hook in _SITES.items() if submodule.startswith(key)), None)
    return f"blocks.{layer}.{site or _SITES['resid_post']}", layer


def read_config(path: Path, overrides: dict[str, Any]) -> SAEConfig:
    """The config of the dictionary_learning SAE at ``path``, as SAELens's
    ``dictionary_learning_1`` config getter builds it, with sizes from the weights."""
    located = _locate(path)
    if located is None:
        raise SteerError("not a dictionary_learning folder (no ae.pt)", where=str(path))
    folder, weights = located
    trainer, buffer, config_file = _trainer(folder)
    dict_class = trainer.get("dict_class")
    if dict_class not in DICT_CLASSES:
        known = ", ".join(DICT_CLASSES)
        raise SteerError(
            f"dict_class {dict_class!r} is not supported (steer reads {known})",
            where=str(config_file),
        )
    architecture, apply_b_dec = DICT_CLASSES[dict_class]
    d_in, d_sae = _sizes(tensor_shapes_in(weights), weights)
    for key, value in (("activation_dim", d_in), ("dict_size", d_sae)):
        if key in trainer and trainer[key] != value:
            raise SteerError(
                f"trainer.{key} is {trainer[key]!r}, but the weights are d_in={d_in}, "
                f"d_sae={d_sae}",
                where=str(config_file),
            )
    hook_name, _ = _hook(trainer)
    lm_name = trainer.get("lm_name")
    metadata = {
        "model_name": lm_name.split("/")[-1] if isinstance(lm_name, str) else None,
        "hook_name": hook_name,
        **_TRAINING,
        "context_size": buffer.get("ctx_len"),
        "converted_from": NAME,
        "dict_class": dict_class,
    }
    raw = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "k": trainer.get("k") if architecture == "topk" else None,
        "metadata": metadata,
    }
    return family_config(raw, overrides, str(config_file))


def _first(tensors: dict[str, Any], names: tuple[str, ...], where: str) -> Any:
    """The first of ``names`` that ``tensors`` holds (the spellings of one parameter)."""
    import torch

    for name in names:
        if name in tensors:
            if not isinstance(tensors[name], torch.Tensor):
                raise SteerError(f"{name} is not a tensor", where=where)
            return tensors[name]
    have = ", ".join(sorted(map(str, tensors))) or "none"
    spelled = " or ".join(repr(n) for n in names)
    raise SteerError(f"tensor {spelled} is missing (has: {have})", where=where)


def _matrix(tensors: dict[str, Any], name: str, linear: str, where: str) -> Any:
    """``name`` as stored (steer's layout, as SAELens prefers it), else the torch Linear
    weight ``linear`` transposed."""
    if name in tensors:
        return _first(tensors, (name,), where)
    return _first(tensors, (linear,), where).T


def read_tensors(path: Path, cfg: SAEConfig) -> dict[str, Any]:
    """The weights under steer's names, as SAELens's loader renames them: ``W_enc``/``W_dec``
    as stored or the Linear layers' weights transposed, the biases by their class's names, and
    a one-number threshold repeated for every feature."""
    import torch

    located = _locate(path)
    if located is None:
        raise SteerError("not a dictionary_learning folder (no ae.pt)", where=str(path))
    weights = located[1]
    where = str(weights)
    tensors = load_torch_file(weights)
    if cfg.architecture not in _PARAMS:
        raise SteerError(f"architecture {cfg.architecture!r} is not a dict_class's", where=where)
    w_enc = _matrix(tensors, "W_enc", "encoder.weight", where)
    out = {"W_enc": w_enc, "W_dec": _matrix(tensors, "W_dec", "decoder.weight", where)}
    for name in _PARAMS[cfg.architecture]:
        out[name] = _first(tensors, SOURCES[name], where)
    threshold = out.get("threshold")
    if threshold is not None and threshold.ndim == 0:  # BatchTopK: one learned threshold
        out["threshold"] = torch.full((w_enc.shape[1],), threshold.item(), dtype=threshold.dtype)
    return out
