"""The language model steer reads and edits.

* :mod:`steer.model.load`: load a model by name (bundled GGUF, .gguf file, HF folder or id).
* :mod:`steer.model.trace`: the nnsight adapter, the only module that calls nnsight.
* :mod:`steer.model.positions`: which positions an SAE should see (special tokens, outliers).
* :mod:`steer.model.loss`: next-token loss helpers.
"""

from __future__ import annotations

from steer.model.load import (
    DEFAULT_MODEL,
    LoadedModel,
    bundled_gguf_path,
    cache_dir,
    default_device,
    load_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "bundled_gguf_path",
    "cache_dir",
    "default_device",
    "load_model",
]
