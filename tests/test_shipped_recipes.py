"""Every example recipe in recipes/ is valid, and (integration) runs on the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.steering.check import check_recipe
from steer.steering.recipe import load_recipe

ALL = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
# Training (`steer train`) and pinpointing (`steer pinpoint`) recipes have their own schemas.
TRAINING = [p for p in ALL if p.name.startswith("train-")]
PINPOINT = [p for p in ALL if p.name.startswith("pinpoint-")]
RECIPES = [p for p in ALL if p not in TRAINING and p not in PINPOINT]


def test_there_are_example_recipes():
    assert any(p.name == "demo.yaml" for p in RECIPES)
    assert TRAINING and PINPOINT


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_training_recipe_loads(path):
    from steer.training.recipe import load_train_recipe

    config = load_train_recipe(path, check_files=False)
    assert config.data and config.d_sae > 0


@pytest.mark.parametrize("path", PINPOINT, ids=lambda p: p.name)
def test_pinpoint_recipe_loads(path):
    from steer.pinpoint.recipe import load_pinpoint_recipe

    recipe = load_pinpoint_recipe(path)
    assert recipe.prompts


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_checks(path, pm):
    check_recipe(load_recipe(path), pm)


@pytest.mark.integration
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_runs(path, smollm):
    from steer.steering.engine import Steerer

    recipe = load_recipe(path)
    gen = recipe.generation.model_copy(update={"max_new_tokens": 6})
    recipe = recipe.model_copy(update={"generation": gen, "prompts": recipe.prompts[:2]})
    results = Steerer(recipe, model=smollm).run()
    assert len(results.results) == len(recipe.prompts)
    assert all(r.steered for r in results.results)
