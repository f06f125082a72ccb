"""SAE math: encode/decode per architecture, encode_features, dtypes, layers."""

from __future__ import annotations

import pytest
import torch

from steer.sae import SAEConfig
from steer.sae.config import layer_of_hook
from steer.sae.topk import TopKSAE

ARCHS = ["standard", "topk", "jumprelu"]


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes(make_sae, arch):
    sae = make_sae(arch)
    x = _x(2, 5, 16)
    f = sae.encode(x)
    assert f.shape == (2, 5, 64)
    assert sae.decode(f).shape == (2, 5, 16)
    assert torch.equal(sae(x), sae.decode(f))
    assert (f >= 0).all()
    assert 0 < (f > 0).sum() < f.numel()  # some features on, some off


def test_standard_is_relu_of_pre_acts(make_sae):
    sae = make_sae("standard")
    x = _x(7, 16)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert torch.equal(sae.pre_acts(x), pre)
    assert torch.equal(sae.encode(x), torch.relu(pre))


def test_apply_b_dec_to_input_false(make_sae):
    sae = make_sae("standard", apply_b_dec_to_input=False)
    x = _x(7, 16)
    assert torch.equal(sae.pre_acts(x), x @ sae.W_enc + sae.b_enc)


def test_decode_formula(make_sae):
    sae = make_sae("standard")
    f = torch.relu(_x(3, 64))
    assert torch.equal(sae.decode(f), f @ sae.W_dec + sae.b_dec)


def test_topk_keeps_at_most_k_largest(make_sae):
    sae = make_sae("topk", k=4)
    x = _x(50, 16)
    f = sae.encode(x)
    pre = sae.pre_acts(x)
    assert ((f != 0).sum(-1) <= 4).all()
    assert ((f != 0).sum(-1) == 4).any()
    for row in range(50):
        top = pre[row].topk(4).indices
        expected = torch.zeros(64)
        expected[top] = torch.relu(pre[row, top])
        assert torch.equal(f[row], expected)


def test_topk_needs_k():
    with pytest.raises(ValueError, match="needs `k`"):
        TopKSAE(SAEConfig(architecture="topk", d_in=4, d_sae=8))
    with pytest.raises(ValueError, match="from 1 to d_sae=8"):
        TopKSAE(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=9))


def test_jumprelu_threshold(make_sae):
    sae = make_sae("jumprelu")
    x = _x(40, 16)
    pre = sae.pre_acts(x)
    f = sae.encode(x)
    above = pre > sae.threshold
    assert torch.equal(f[above], pre[above])
    assert (f[~above] == 0).all()
    # a feature between 0 and its threshold is off, which plain ReLU would keep
    assert ((pre > 0) & ~above).any()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("d_sae", [8, 24, 64, 100])
@pytest.mark.parametrize("shape", [(16,), (1, 16), (3, 16), (2, 9, 16), (1, 1, 16)])
def test_encode_features_equals_encode_exactly(make_sae, arch, d_sae, shape):
    sae = make_sae(arch, d_sae=d_sae, k=3)
    x = _x(*shape, seed=d_sae)
    full = sae.encode(x)
    for idx in ([0], [d_sae - 1, 2], [5, 5, 1], list(range(d_sae)), list(range(0, d_sae, 3)), []):
        got = sae.encode_features(x, torch.tensor(idx, dtype=torch.long))
        assert got.shape == (*shape[:-1], len(idx))
        assert torch.equal(got, full[..., idx]), (arch, d_sae, shape, idx)


def test_encode_features_accepts_a_list(make_sae):
    sae = make_sae("jumprelu")
    x = _x(4, 16)
    assert torch.equal(sae.encode_features(x, [3, 1]), sae.encode(x)[..., [3, 1]])


@pytest.mark.parametrize("arch", ARCHS)
def test_input_is_cast_to_the_sae_dtype(make_sae, arch):
    sae = make_sae(arch, dtype="float64")
    assert sae.W_enc.dtype == torch.float64
    x = _x(3, 16)
    f = sae.encode(x)
    assert f.dtype == torch.float64
    assert torch.equal(f, sae.encode(x.double()))
    assert sae.encode_features(x, [1, 2]).dtype == torch.float64
    assert sae.decode(f.float()).dtype == torch.float64


def test_bfloat16_sae(make_sae):
    sae = make_sae("topk", dtype="bfloat16")
    f = sae.encode(_x(3, 16))
    assert f.dtype == torch.bfloat16
    assert ((f != 0).sum(-1) <= 4).all()


def test_decoder_rows(make_sae):
    sae = make_sae("standard")
    idx = torch.tensor([7, 0, 63])
    assert torch.equal(sae.decoder_rows(idx), sae.W_dec[idx])
    assert sae.decoder_rows(idx).shape == (3, 16)


def test_unsupported_normalization_refused():
    from steer.sae.standard import StandardSAE

    cfg = SAEConfig(
        architecture="standard", d_in=4, d_sae=8, normalize_activations="covariance_whitening"
    )
    with pytest.raises(ValueError, match="'covariance_whitening' is not supported: SAELens folds"):
        StandardSAE(cfg)


@pytest.mark.parametrize(
    ("hf", "tl", "layer"),
    [
        ("model.layers.12", None, 12),
        ("layers.3", None, 3),
        ("transformer.h.5", None, 5),
        (None, "blocks.7.hook_resid_post", 7),
        (None, "blocks.7.hook_resid_pre", 6),  # the input of block 7 is block 6's output
        (None, "blocks.0.hook_resid_pre", None),  # the embeddings
        (None, "blocks.7.hook_mlp_out", None),
        ("model.layers.2.mlp", None, None),
        ("model.layers.4", "blocks.9.hook_resid_post", 4),  # the HF name wins
        (None, None, None),
    ],
)
def test_layer_from_hook_names(hf, tl, layer):
    assert layer_of_hook(hf, tl) == layer
    cfg = SAEConfig(architecture="standard", d_in=4, d_sae=8, hf_hook_name=hf, hook_name=tl)
    assert cfg.layer == layer


def test_config_is_frozen_and_hashable():
    cfg = SAEConfig(architecture="standard", d_in=4, d_sae=8, metadata={"a": [1]})
    with pytest.raises(AttributeError):
        cfg.d_in = 5  # type: ignore[misc]
    hash(cfg)


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_encode_features_exact_at_real_size(make_sae, arch):
    # SmolLM2-135M's width and an 8x dictionary: the size the engine edits.
    sae = make_sae(arch, d_in=576, d_sae=4608)
    x = _x(2, 7, 576)
    full = sae.encode(x)
    for idx in ([4000], [1, 2, 3], list(range(0, 4608, 97))):
        assert torch.equal(sae.encode_features(x, idx), full[..., idx])
