"""Cross-distribution evaluation on the real SmolLM2 and the shipped SAE: what a detector is
judged on is what the shipped monitor recipes score (``steer monitor score``), and the shipped
recipes pass ``steer check``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steer.corpus.shipped import shipped_text
from steer.monitoring.labelled import encode_labelled
from steer.monitoring.score import score_texts, watched_groups
from steer.plugins.manager import get_plugin_manager
from steer.steering.attach import attach_saes, load_saes
from steer.steering.recipe import load_recipe

pytestmark = pytest.mark.integration

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("name", ["monitor-toxicity.yaml", "monitor-harmful-requests.yaml"])
def test_a_shipped_monitor_scores_texts_as_its_detector_does(smollm, name):
    texts = shipped_text("requests-harmful").read_text().splitlines()[:6]
    texts += shipped_text("requests-benign").read_text().splitlines()[:6]
    recipe = load_recipe(RECIPES / name)
    pm = get_plugin_manager()
    (group,) = watched_groups(recipe, pm)
    attached = attach_saes(load_saes(recipe, pm=pm), smollm, recipe)
    rows = score_texts(smollm, attached, [group], texts, progress=False)
    sae = attached["res12"][0]
    enc = encode_labelled(smollm, sae, texts, [True] * 6 + [False] * 6, progress=False)
    ids = torch.tensor(group.features)
    if group.monitor.name == "linear":
        w = torch.zeros(enc.sae_max.shape[1])
        w[ids] = torch.tensor(group.spec.weights)
        expected = enc.token_scores(w, group.spec.bias)
    else:
        expected = enc.sae_max[:, ids].max(dim=1).values
    got = torch.tensor([r.scores[group.name] for r in rows])
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3)
