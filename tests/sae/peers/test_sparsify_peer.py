"""EleutherAI sparsify folders written by the real eai-sparsify package: steer reads the same
features and reconstructions, and refuses by name the variants it does not run."""

from __future__ import annotations

import pytest
import torch

sparsify = pytest.importorskip("sparsify")

from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

from steer.errors import SteerError  # noqa: E402
from steer.sae import load_sae  # noqa: E402

D_IN, N, K = 16, 64, 8


def _coder(**cfg) -> SparseCoder:
    torch.manual_seed(0)
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=N, k=K, **cfg))
    with torch.no_grad():
        coder.encoder.bias.copy_(torch.randn(N) * 0.3)
        coder.b_dec.copy_(torch.randn(D_IN) * 0.1)
        if coder.W_dec is not None:
            coder.W_dec.copy_(torch.randn(N, D_IN) / 4)
    return coder


def test_sparsify_folder_matches_sparsify_itself(tmp_path):
    coder = _coder()
    coder.save_to_disk(tmp_path / "layers.3")
    ours = load_sae(tmp_path)  # the repo folder holding one hookpoint
    assert ours.cfg.architecture == "topk" and ours.cfg.k == K and ours.cfg.layer == 3
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        top = coder.encode(x)
        dense = torch.zeros(32, N).scatter(-1, top.top_indices, top.top_acts)
        got = ours.encode(x)
        assert torch.equal(got > 0, dense > 0)
        assert torch.equal(got, dense)
        torch.testing.assert_close(
            ours(x), coder.decode(top.top_acts, top.top_indices), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("skip", [False, True])
def test_sparsify_transcoder_matches_sparsify_itself(tmp_path, skip):
    coder = _coder(transcode=True, skip_connection=skip)
    if skip:
        with torch.no_grad():
            coder.W_skip.copy_(torch.randn(D_IN, D_IN) / 8)
    coder.save_to_disk(tmp_path / "layers.2.mlp")
    ours = load_sae(tmp_path / "layers.2.mlp")
    assert ours.cfg.architecture == ("topk_skip_transcoder" if skip else "topk_transcoder")
    assert ours.cfg.hf_hook_name == ours.cfg.hf_hook_name_out == "model.layers.2.mlp"
    assert ours.cfg.hook_name_out == "blocks.2.hook_mlp_out"
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        top = coder.encode(x)  # a transcoder does not subtract b_dec from its input
        dense = torch.zeros(32, N).scatter(-1, top.top_indices, top.top_acts)
        assert torch.equal(ours.encode(x), dense)
        want = coder(x).sae_out  # decode plus, with a skip connection, x @ W_skip.T
        # sparsify's forward decodes through its own sparse kernel (embedding_bag), summing the
        # k rows in another order than a dense matmul: equal to float32 rounding.
        torch.testing.assert_close(ours(x), want, rtol=0, atol=1e-6)


def test_sparsify_skip_connection_on_an_autoencoder_is_refused_by_name(tmp_path):
    _coder(skip_connection=True).save_to_disk(tmp_path / "layers.2")
    with pytest.raises(
        SteerError, match="skip_connection True is not supported on an autoencoder"
    ) as info:
        load_sae(tmp_path / "layers.2")
    assert "\n" not in str(info.value)
