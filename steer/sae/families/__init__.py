"""SAE file layouts other than SAELens's and sparsify's, one module each.

Each family module defines:

* ``NAME`` (``"gemmascope"``) and ``TITLE`` (``"GemmaScope (params.npz)"``);
* ``matches(path: Path) -> bool``: whether ``path`` (the file or folder a user or a release
  names) is in this layout, from file names alone;
* ``read_config(path: Path, overrides: dict) -> SAEConfig``: the config, from the family's
  own config file, from names in the path (``layer_20``, ``width_16k``) and from
  ``overrides`` (SAELens cfg keys a release list supplies; they win). No weights are read;
  problems are one-line :class:`~steer.errors.SteerError`\\ s naming the file;
* ``read_tensors(path: Path, cfg: SAEConfig) -> dict[str, torch.Tensor]``: the weights under
  steer's names and layouts (``W_enc`` ``[d_in, d_sae]``, ``W_dec`` ``[d_sae, d_out]``, ...),
  in any float dtype: :func:`steer.sae.formats.load_sae` checks their shapes and values and
  casts them.

A ``.pt``/``.pth`` file is only ever read with ``torch.load(weights_only=True)``
(:func:`steer.sae.families.common.load_torch_file`): steer never unpickles.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

# Tried in this order; the first whose ``matches`` says yes reads the path.
FAMILY_MODULES = (
    "gemmascope",
    "gemmascope2",
    "llamascope",
    "dictionary_learning",
    "goodfire",
    "qwenscope",
    "deepseek_r1",
)


def families() -> list[ModuleType]:
    """The family modules, in the order they are tried."""
    return [importlib.import_module(f"{__name__}.{name}") for name in FAMILY_MODULES]


def family_for(path: Path) -> ModuleType | None:
    """The family whose layout ``path`` is in, or ``None``."""
    for module in families():
        if module.matches(path):
            return module
    return None


def family_named(name: str) -> ModuleType:
    """The family module called ``name`` (``NAME``); ``KeyError`` for an unknown one."""
    for module in families():
        if name == module.NAME:
            return module
    raise KeyError(name)
