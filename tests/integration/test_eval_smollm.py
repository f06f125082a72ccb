"""``steer eval``'s arms on the real SmolLM2 and the shipped SAE, on a few prompts: the
recipe's nudge and the diff-of-means vector move the stream equally far, the prompting arm
mentions the concept, and the unsteered arm costs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.evaluation.concepts import load_concept
from steer.evaluation.run import Evaluation, Settings
from steer.evaluation.summary import summarise
from steer.steering.engine import Steerer
from steer.steering.recipe import load_recipe

pytestmark = pytest.mark.integration

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_sea_recipe_arms_on_smollm(smollm, pm):
    recipe = load_recipe(RECIPES / "steer-sea.yaml")
    gen = recipe.generation.model_copy(update={"max_new_tokens": 12})
    steerer = Steerer(recipe.model_copy(update={"generation": gen}), model=smollm, pm=pm)
    prompts = ["Tell me about your weekend.", "Describe an old house.",
               "What makes a good teacher?", "Describe a busy market."]  # fmt: skip
    settings = Settings(
        concept=load_concept("sea"), prompts=prompts, strengths=[1.0], kl_windows=2, bootstrap=100
    )
    evaluation = Evaluation(steerer, settings, pm=pm)
    # `add` 35 along a unit-norm decoder row moves every position by 35
    assert evaluation.norm == pytest.approx(35.0, rel=0.01)
    records = evaluation.run()
    result = summarise(records, ["lexicon"], prompts=prompts, max_ppl_ratio=2.0)
    rows = result["arms"]
    assert rows["none"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert rows["recipe@1"]["kl"]["mean"] > 0.01 and rows["diffmean@1"]["kl"]["mean"] > 0.01
    assert rows["prompt"]["scores"]["lexicon"]["mean"] >= 0.5  # asked to, it talks of the sea
    assert 0.4 <= rows["none"]["mc_accuracy"]["mean"] <= 1.0  # well above chance (0.25)
