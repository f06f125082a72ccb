"""Every SAELens architecture and setting steer runs, against SAELens itself: an SAE built by
the real sae-lens package, saved with its own ``save_model``, loaded by steer, gives the same
features and reconstructions (normalisation modes, decoder-norm rescaling, a release's
norm_scaling_factor, gated SAEs and the four transcoder kinds)."""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from sae_lens.registry import get_sae_class  # noqa: E402
from sae_lens.saes.sae import SAE as LensSAE  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

from steer.sae import load_sae  # noqa: E402

D_IN, D_SAE, D_OUT = 16, 64, 12


def lens_sae(architecture: str, **cfg) -> LensSAE:
    """A SAELens SAE with seeded random weights: biases partly negative, thresholds positive,
    so some features are on and some off on randn inputs."""
    transcoder = "transcoder" in architecture
    fields = {"d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": not transcoder, **cfg}
    if transcoder:
        fields["d_out"] = D_OUT
    metadata = SAEMetadata(model_name="test-model", hook_name="blocks.3.hook_resid_post")
    if transcoder:
        metadata = SAEMetadata(
            model_name="test-model",
            hook_name="blocks.3.ln2.hook_normalized",
            hook_name_out="blocks.3.hook_mlp_out",
        )
    sae_class, config_class = get_sae_class(architecture)
    config = config_class(**fields)
    config.metadata = metadata
    sae = sae_class(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            values = torch.randn(param.shape, generator=gen)
            if name == "W_enc":
                values /= D_IN**0.5
            elif name in ("b_enc", "b_gate", "b_mag", "r_mag"):
                values *= 0.3
            elif name == "threshold":
                values = values.abs() * 0.3
            elif name == "W_skip":
                values *= 0.1
            param.copy_(values)
    return sae


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3 + 0.5


def _compare(lens: LensSAE, folder, *, tol: float = 0.0, **load) -> None:
    lens.save_model(folder)
    ours = load_sae(folder, **load)
    x = _x(40, D_IN)
    with torch.no_grad():
        want_f = lens.encode(x)
        want_out = lens(x)
        got_f = ours.encode(x)
        got_out = ours(x)
    assert 0 < int((want_f > 0).sum()) < want_f.numel()  # a real mix of on and off
    assert torch.equal(got_f > 0, want_f > 0)
    assert (got_f - want_f).abs().max() <= tol * (1 + want_f.abs().max())
    assert (got_out - want_out).abs().max() <= tol * (1 + want_out.abs().max())


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "gated"])
def test_architectures_match_saelens_exactly(tmp_path, architecture):
    _compare(lens_sae(architecture), tmp_path)


@pytest.mark.parametrize("mode", ["constant_norm_rescale", "layer_norm"])
def test_per_token_normalisations_match_saelens_exactly(tmp_path, mode):
    _compare(lens_sae("standard", normalize_activations=mode), tmp_path)


def test_topk_with_decoder_norm_rescaling_matches_saelens(tmp_path):
    # steer folds the norms into the weights when it loads (as SAELens's fold_W_dec_norm),
    # which reorders float operations: equal to float32 rounding, the same features on.
    lens = lens_sae("topk", k=8, rescale_acts_by_decoder_norm=True)
    _compare(lens, tmp_path, tol=1e-5)
    ours = load_sae(tmp_path)
    assert torch.allclose(ours.W_dec.norm(dim=-1), torch.ones(D_SAE))
    assert ours.cfg.metadata["folded_decoder_norms"] is True


@pytest.mark.parametrize(
    "architecture",
    ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"],
)
def test_transcoders_match_saelens_exactly(tmp_path, architecture):
    lens = lens_sae(architecture)
    _compare(lens, tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.output_width == D_OUT
    assert ours.cfg.hook_name_out == "blocks.3.hook_mlp_out"


def test_release_norm_scaling_factor_matches_saelens_folding(tmp_path):
    factor = 0.37
    lens = lens_sae("jumprelu", normalize_activations="expected_average_only_in")
    lens.save_model(tmp_path)
    lens.fold_activation_norm_scaling_factor(factor)  # what SAE.from_pretrained does
    ours = load_sae(tmp_path, overrides={"norm_scaling_factor": factor})
    x = _x(40, D_IN)
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), lens.encode(x), atol=1e-5)
        assert torch.allclose(ours(x), lens(x), atol=1e-5)
    assert ours.cfg.normalize_activations == "none"
    assert ours.cfg.metadata["folded_norm_scaling_factor"] == factor
    # Without the factor the numbers would be different, so the override is what made them.
    unscaled = load_sae(tmp_path, overrides={"norm_scaling_factor": 1.0})
    assert not torch.allclose(unscaled.encode(x), ours.encode(x), atol=1e-3)


def test_converted_copy_reads_the_same_in_saelens(tmp_path):
    """`steer sae convert`'s writer: what steer saves, SAELens loads with the same numbers,
    with the folded settings already in the weights."""
    from steer.sae import save_sae

    lens = lens_sae("topk", k=8, rescale_acts_by_decoder_norm=True)
    lens.save_model(tmp_path / "src")
    ours = load_sae(tmp_path / "src")
    save_sae(ours, tmp_path / "copy")
    back = LensSAE.load_from_disk(tmp_path / "copy")
    x = _x(40, D_IN)
    with torch.no_grad():
        assert torch.equal(back.encode(x), ours.encode(x))
        assert torch.equal(back(x), ours(x))
