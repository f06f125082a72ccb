"""Monitors on the real SmolLM2 and the shipped SAE: the crime-stop demo recipe ends only the
story that turns to crime, and the screened TopK read gives the full encode's events."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.steering.engine import Steerer
from steer.steering.recipe import load_recipe

pytestmark = pytest.mark.integration

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_crime_stop_ends_only_the_story_that_turns_to_crime(smollm):
    recipe = load_recipe(RECIPES / "monitor-crime-stop.yaml")
    recipe = recipe.model_copy(
        update={
            "prompts": [recipe.prompts[0], recipe.prompts[1]],  # the robbery story, a weekend
            "generation": recipe.generation.model_copy(update={"max_new_tokens": 40}),
        }
    )
    steerer = Steerer(recipe, model=smollm)
    story, weekend = steerer.run().results
    (stop,) = story.actions
    assert stop["action"] == "stop" and stop["phase"] == "generated"
    assert stop["activation"] > 5.0
    # The completion ends with the token the group fired on; the baseline went on.
    assert story.baseline.startswith(story.steered) and len(story.steered) < len(story.baseline)
    assert story.steered.endswith(stop["token"])
    assert weekend.actions == [] and weekend.steered == weekend.baseline

    # Without the screen (the full 8,192-feature encode on every token) the events are equal.
    sae = steerer.saes["res12"][0]
    sae.activation_bound_columns = lambda pre, idx: None
    try:
        unscreened = steerer.run(baseline=False).results
    finally:
        del sae.activation_bound_columns
    assert [r.events for r in unscreened] == [story.events, weekend.events]
