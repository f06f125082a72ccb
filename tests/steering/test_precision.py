"""Steering a bfloat16 model: the edit is decoded in float32 and added in the model's dtype, so a
bf16 run matches the float32 one to bf16's own rounding; a recipe can ask for the dtype."""

from __future__ import annotations

import copy

import pytest
import torch
from steer_plugins.clamp import clamp
from support.sae_factory import make_sae

from steer.model import LoadedModel
from steer.model.sites import Hook
from steer.steering.edit import Readings, edit_site
from steer.steering.engine import Steerer
from steer.steering.plan import Operation, Site
from steer.steering.recipe import parse_recipe

# bfloat16 keeps 8 significant bits: a value is within 2**-8 of itself, relatively.
BF16_RTOL = 2**-8


def _edited(hidden, sae, feats):
    decoder = sae.decoder_rows(feats).detach().float()
    site = Site(sae_id="s", sae=sae, hook=Hook.at("resid_post", 1), features=feats, decoder=decoder)
    site.operations.append(Operation("clamp", clamp, 6.0, torch.tensor([0, 1]), None, "all"))
    return edit_site(site, hidden, step=1, valid=None, readings=Readings())


def test_bf16_edit_matches_float32_to_bf16_rounding():
    sae = make_sae(d_in=64, d_sae=96, layer=1, seed=3)
    feats = torch.tensor([4, 17])
    x32 = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0)) * 4
    x16 = x32.to(torch.bfloat16)
    new32 = _edited(x32, sae, feats)
    new16 = _edited(x16, sae, feats)
    assert new16.dtype == torch.bfloat16
    # Per token, the edited stream is the float32 one up to a few bf16 roundings (of the input,
    # which the features are encoded from, and of the sum): stated tolerance 4 * 2**-8 = 1.6 %.
    error = (new16.float() - new32).norm(dim=-1) / new32.norm(dim=-1)
    assert error.max() < 4 * BF16_RTOL, float(error.max())
    # and the edit itself (not just the stream) is there: the change is far above rounding
    assert (new32 - x32).abs().max() > 100 * BF16_RTOL * x32.abs().max()


def test_a_bf16_model_steers_and_no_edit_gives_its_plain_tokens(tiny_model, pm, tmp_path):
    from steer.sae import save_sae

    bf16 = LoadedModel(
        name=tiny_model.name,
        hf=copy.deepcopy(tiny_model.hf).to(torch.bfloat16),
        tokenizer=tiny_model.tokenizer,
    )
    save_sae(make_sae(d_in=bf16.d_model, d_sae=32, layer=1, seed=5, model_name="tiny-llama"),
             tmp_path / "sae")  # fmt: skip
    base = {"saes": [{"id": "s", "path": str(tmp_path / "sae")}], "prompts": ["Paris is"],
            "generation": {"max_new_tokens": 6}}  # fmt: skip
    results = Steerer(parse_recipe(base), pm=pm, model=bf16).run().results
    assert results[0].steered == results[0].baseline  # the baseline: plain bf16 generate
    clamped = {**base, "interventions": [{"plugin": "clamp", "sae": "s", "features": [3],
                                          "value": 200.0}]}  # fmt: skip
    steered = Steerer(parse_recipe(clamped), pm=pm, model=bf16).run().results
    assert steered[0].steered != steered[0].baseline


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_a_recipe_names_the_dtype(dtype, monkeypatch, tiny_model, pm):
    import steer.model

    asked = {}

    def fake_load(name, *, device=None, dtype=None, device_map=None):
        asked["dtype"] = dtype
        return tiny_model

    monkeypatch.setattr(steer.model, "load_model", fake_load)
    Steerer(parse_recipe({"dtype": dtype, "prompts": ["hi"]}), pm=pm)
    assert asked["dtype"] == dtype
