"""Sparse autoencoders: the SAE classes, and reading/writing them on disk.

``load_sae`` reads SAELens folders (v6 and older) and EleutherAI sparsify folders;
``save_sae`` writes SAELens v6. Architectures are ``standard``, ``topk``, ``jumprelu`` plus any
a plugin registers (``steer_register_sae_architectures``).
"""

from __future__ import annotations

from steer.sae.base import SAE, SAEConfig
from steer.sae.formats import check_fits_model, load_sae, read_sae_config, save_sae
from steer.sae.registry import get_architectures

__all__ = [
    "SAE",
    "SAEConfig",
    "check_fits_model",
    "get_architectures",
    "load_sae",
    "read_sae_config",
    "save_sae",
]
