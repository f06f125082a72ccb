"""An SAE trained on the MLP's output of the real SmolLM2 (steer train --site mlp_out) steers it
from a recipe: no edit gives the plain model's tokens, a clamp changes them, the SAE evaluates
at its own site, and a monitor reads that site."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steer.model.sites import Hook
from steer.model.trace import site_output
from steer.sae import load_sae
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe
from steer.training.config import TrainConfig
from steer.training.run import train_sae

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[2] / "steer" / "data" / "corpus" / "train-sample"
PROMPTS = ["Write a haiku about the sea.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def mlp_sae(tmp_path_factory, smollm):
    """A small TopK SAE on block 6's MLP output, trained on the shipped sample (~40 s)."""
    root = tmp_path_factory.mktemp("mlp-sae")
    cfg = TrainConfig(
        model="smollm2-135m-instruct",
        layer=6,
        site="mlp_out",
        d_sae=256,
        k=16,
        data=[{"path": str(CORPUS)}],
        tokens={"collect": 16_384, "train": 131_072},
        batch_size=512,
        out=str(root / "sae"),
        cache_dir=str(root / "acts"),
        checkpoint_dir=str(root / "ckpt"),
    )
    return train_sae(cfg, model=smollm, progress=False)


def _relative_error(sae, x):
    with torch.no_grad():
        return float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_the_trained_sae_names_and_fits_its_site(mlp_sae, smollm):
    sae = load_sae(mlp_sae)
    assert sae.cfg.hook_name == "blocks.6.hook_mlp_out" and sae.cfg.hf_hook_name is None
    text = sorted(CORPUS.glob("*.txt"))[0].read_text(encoding="utf-8")[:2000]
    ids = smollm.tokenize([text], chat=False)["input_ids"][:, :256]
    own = site_output(smollm, Hook.at("mlp_out", 6), ids)[0, 1:]
    other = site_output(smollm, Hook.at("resid_post", 6), ids)[0, 1:]
    # On text like its training data it explains most of its own site's variance, and does
    # not fit the residual stream beside it.
    own_error, other_error = _relative_error(sae, own), _relative_error(sae, other)
    assert own_error < 0.6 and other_error > 0.9, (own_error, other_error)


def _run(smollm, sae_path, **extra):
    recipe = {
        "saes": [{"id": "mlp", "path": str(sae_path)}],
        "prompts": PROMPTS,
        "generation": {"max_new_tokens": 8},
        **extra,
    }
    return Steerer(parse_recipe(recipe), model=smollm).run().results


def test_an_mlp_output_sae_steers_smollm_from_a_recipe(mlp_sae, smollm):
    plain = _run(smollm, mlp_sae)
    assert all(r.steered == r.baseline for r in plain)  # attached, no edit: the plain model
    sae = load_sae(mlp_sae)
    # the feature with the largest decoder norm, clamped high on every token
    feature = int(sae.W_dec.norm(dim=-1).argmax())
    clamp = [{"plugin": "clamp", "sae": "mlp", "features": [feature], "value": 40.0}]
    steered = _run(smollm, mlp_sae, interventions=clamp)
    assert any(r.steered != r.baseline for r in steered)


def test_a_monitor_reads_the_mlp_output_site(mlp_sae, smollm):
    sae = load_sae(mlp_sae)
    ids = smollm.tokenize([PROMPTS[0]], chat=None)["input_ids"]
    with torch.no_grad():
        acts = sae.encode(site_output(smollm, Hook.at("mlp_out", 6), ids))[0]
    feature = int(acts[-1].argmax())  # on at the prompt's last token
    threshold = float(acts[-1, feature]) * 0.5
    watch = [{"name": "w", "sae": "mlp", "features": [feature], "threshold": threshold,
              "positions": "prompt"}]  # fmt: skip
    results = _run(smollm, mlp_sae, monitors=watch)
    last = ids.shape[1] - 1
    events = [e for e in results[0].events if e["phase"] == "prompt" and e["token_index"] == last]
    assert events, results[0].events
    assert events[0]["activation"] == pytest.approx(float(acts[-1, feature]), rel=1e-3)
