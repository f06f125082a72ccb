"""Hand-made SAEs whose answers are known exactly."""

from __future__ import annotations

import torch

from steer.sae import SAEConfig, get_architectures


def blank_standard_sae(*, d_in: int, d_sae: int, layer: int, model_name: str = "tiny-llama"):
    """A standard (ReLU) SAE on the residual stream after block ``layer`` of ``model_name``
    (default: the tiny model), all weights zero, for a test to fill in by hand. ``b_dec`` is
    not subtracted from the input."""
    cfg = SAEConfig(
        architecture="standard",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hf_hook_name=f"model.layers.{layer}",
        hook_name=f"blocks.{layer}.hook_resid_post",
        model_name=model_name,
    )
    return get_architectures()["standard"](cfg)


def orthonormal_sae(
    *,
    d_in: int,
    d_sae: int,
    layer: int,
    seed: int = 0,
    bias: float = 1000.0,
    model_name: str = "tiny-llama",
):
    """A standard (ReLU) SAE with orthonormal encoder columns, decoder = encoder^T, and a large
    encoder bias so every feature is always on.

    Encoding is then linear and exactly invertible on the span of the dictionary: after the
    engine writes ``x + (c - f_j) W_dec[j]``, re-encoding gives ``f_j == c`` exactly (up to
    float rounding), so a clamp can be read back from the residual stream.
    """
    assert d_sae <= d_in
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_in, d_sae, generator=gen))
    sae = blank_standard_sae(d_in=d_in, d_sae=d_sae, layer=layer, model_name=model_name)
    with torch.no_grad():
        sae.W_enc.copy_(q)
        sae.W_dec.copy_(q.T)
        sae.b_enc.fill_(bias)
        sae.b_dec.copy_(-bias * q.sum(dim=1))  # decode(encode(x)) == x on the span
    return sae
