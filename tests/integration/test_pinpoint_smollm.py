"""Pinpointing on the real SmolLM2 and the shipped SAE: the gender recipe, on a few prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.pinpoint import Pinpointer, load_pinpoint_recipe

pytestmark = pytest.mark.integration

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pinpoint-gender.yaml"


def test_gender_recipe_pinpoints_features_that_carry_the_stereotype(smollm):
    recipe = load_pinpoint_recipe(RECIPE)
    recipe = recipe.model_copy(
        update={
            "prompts": recipe.prompts[::4],  # 13 of the 50, both stereotypes
            "top_k": 8,
            "curve_max": 20,
            "neuron_baseline": False,
            "side_effect_data": None,
        }
    )
    result = Pinpointer(recipe, model=smollm).run().to_dict()
    assert result["clean_metric"] > 0  # SmolLM2 follows the occupational stereotype
    features = result["sites"][0]["features"]
    top = features["ranked"][0]
    assert top["attribution"] < 0 and top["verified_effect"] < 0
    curve = features["curve"]
    assert curve[-1]["n"] == 20
    assert curve[-1]["metric"] < 0.8 * result["clean_metric"]
