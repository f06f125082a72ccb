"""Steering through SAEs that normalise each token or read a centred stream, and SAEs that name
another model: the edit is written back in the model's own scale, and a mismatch is refused."""

from __future__ import annotations

import pytest
import torch
from steer_plugins.clamp import clamp
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.model.sites import Hook
from steer.sae import save_sae
from steer.steering.edit import Readings, edit_site
from steer.steering.engine import Steerer
from steer.steering.plan import Operation, Site
from steer.steering.recipe import parse_recipe


def _clamped(sae, x, feats, value=3.0):
    site = Site(
        sae_id="s",
        sae=sae,
        hook=Hook.at("resid_post", 2),
        features=feats,
        decoder=sae.decoder_rows(feats),
    )
    site.operations.append(Operation("clamp", clamp, value, torch.tensor([0, 1]), None, "all"))
    return edit_site(site, x, step=1, valid=None, readings=Readings())


@pytest.mark.parametrize(
    ("overrides", "scale_of"),
    [
        # SAELens: x * sqrt(d)/|x| in, / (sqrt(d)/|x|) out: a change scales by |x|/sqrt(d).
        (
            {"normalize_activations": "constant_norm_rescale"},
            lambda x: x.norm(dim=-1, keepdim=True) / 8.0,
        ),
        # SAELens: (x - mu) / (std + eps) in, * std + mu out: a change scales by std.
        ({"normalize_activations": "layer_norm"}, lambda x: x.std(dim=-1, keepdim=True)),
        # A centred stream: the mean is removed in and added back out; a change is as it is.
        (
            {"metadata": {"model_from_pretrained_kwargs": {"center_writing_weights": True}}},
            lambda x: torch.ones(*x.shape[:-1], 1),
        ),
    ],
)
def test_edit_is_written_back_in_the_models_scale(overrides, scale_of):
    sae = make_sae(d_in=64, d_sae=96, layer=2, seed=4, **overrides)
    feats = torch.tensor([5, 9])
    x = torch.randn(2, 4, 64) * 3 + 1
    new = _clamped(sae, x, feats)
    with torch.no_grad():
        f = sae.encode(x)
        expected = x + ((3.0 - f[..., feats]) @ sae.W_dec[feats]) * scale_of(x)
    torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-5)


def test_centred_sae_reads_the_stream_minus_its_mean():
    plain = make_sae(d_in=16, d_sae=64, seed=3)
    centred = make_sae(
        d_in=16,
        d_sae=64,
        seed=3,
        metadata={"model_from_pretrained_kwargs": {"center_writing_weights": True}},
    )
    x = torch.randn(5, 16) + 2.0
    with torch.no_grad():
        assert torch.equal(centred.encode(x), plain.encode(x - x.mean(-1, keepdim=True)))
        mean = x.mean(-1, keepdim=True)
        torch.testing.assert_close(centred(x), plain(x - mean) + mean)
    with pytest.raises(ValueError, match="pass like="):
        centred.decode(centred.encode(x))


def test_an_sae_of_another_model_is_refused_unless_allowed(tiny_model, pm, tmp_path):
    sae = make_sae(d_in=tiny_model.d_model, d_sae=16, layer=1, model_name="google/gemma-2-2b")
    save_sae(sae, tmp_path / "sae")
    spec = {"id": "s", "path": str(tmp_path / "sae")}
    with pytest.raises(SteerError) as info:
        Steerer(parse_recipe({"saes": [spec], "prompts": ["hi"]}), pm=pm, model=tiny_model)
    assert str(info.value) == (
        "saes[0]: the SAE was trained on 'google/gemma-2-2b', not on 'tiny-llama' (set "
        "`allow_other_model: true` on the SAE entry to attach it anyway)"
    )
    allowed = parse_recipe({"saes": [{**spec, "allow_other_model": True}], "prompts": ["hi"]})
    Steerer(allowed, pm=pm, model=tiny_model)  # attaches
