"""``make_sae``: a small SAE with random weights, for tests in any folder.

Tests import it as ``from sae_factory import make_sae`` (pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives there); tests under ``tests/sae/`` can also
use the ``make_sae`` fixture.
"""

from __future__ import annotations

from typing import Any

import torch

from steer.sae import SAE, SAEConfig, get_architectures


def make_sae(
    architecture: str = "standard",
    d_in: int = 16,
    d_sae: int = 64,
    k: int = 4,
    seed: int = 0,
    layer: int | None = 0,
    **overrides: Any,
) -> SAE:
    """An SAE of a built-in ``architecture`` with seeded random weights.

    ``k`` is used only for ``topk``. ``layer`` sets the hook names (``model.layers.N`` and
    ``blocks.N.hook_resid_post``; ``None``: no hook names). ``overrides`` are other
    :class:`SAEConfig` fields (``dtype``, ``apply_b_dec_to_input``, ``hf_hook_name``,
    ``metadata``, ...) and win over what ``layer`` sets. Encoder biases are
    partly negative and JumpReLU thresholds positive, so every architecture gives a mix of
    active and inactive features on ``torch.randn`` inputs.
    """
    fields: dict[str, Any] = {
        "hook_name": None if layer is None else f"blocks.{layer}.hook_resid_post",
        "hf_hook_name": None if layer is None else f"model.layers.{layer}",
        "model_name": "test-model",
        **overrides,
    }
    cfg = SAEConfig(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=k if architecture == "topk" else None,
        **fields,
    )
    sae = get_architectures()[architecture](cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            values = torch.randn(param.shape, generator=gen)
            if name == "W_enc":
                values /= d_in**0.5
            elif name == "b_enc":
                values *= 0.3
            elif name == "threshold":
                values = values.abs() * 0.3
            param.copy_(values.to(param.dtype))
    return sae
