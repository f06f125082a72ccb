"""Every example recipe in recipes/ is valid, and (integration) runs on the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.check import check_recipe
from steer.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def test_there_are_example_recipes():
    assert any(p.name == "demo.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_checks(path, pm):
    check_recipe(load_recipe(path), pm)


@pytest.mark.integration
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_runs(path, smollm):
    from steer.engine import Steerer

    recipe = load_recipe(path)
    gen = recipe.generation.model_copy(update={"max_new_tokens": 6})
    recipe = recipe.model_copy(update={"generation": gen, "prompts": recipe.prompts[:2]})
    results = Steerer(recipe, model=smollm).run()
    assert len(results.results) == len(recipe.prompts)
    assert all(r.steered for r in results.results)
