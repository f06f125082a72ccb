"""Sparse autoencoders: the SAE classes, and reading/writing them on disk.

``load_sae`` reads SAELens folders (v6 and older) and EleutherAI sparsify folders;
``save_sae`` writes SAELens v6. Architectures are ``standard``, ``topk``, ``jumprelu`` plus any
a plugin registers (``steer_register_sae_architectures``).

The names below are imported on first use: reading and checking a cfg.json
(:func:`read_sae_config`) does not import torch, so ``steer check`` stays fast.
"""

from __future__ import annotations

from steer.lazy import lazy_exports

_EXPORTS = {
    "SAE": "steer.sae.base",
    "SAEConfig": "steer.sae.config",
    "check_fits_model": "steer.sae.formats",
    "load_sae": "steer.sae.formats",
    "save_sae": "steer.sae.formats",
    "read_sae_config": "steer.sae.configs",
    "get_architectures": "steer.sae.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
