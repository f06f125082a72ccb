"""`steer serve` on the real SmolLM2 with the shipped layer-12 SAE: greedy chat completions
through the official openai client equal `steer run` token for token, a request's own edit
equals the same edit in a recipe, and concurrent requests with different edits each get their
own result."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
from support.server import running

from steer.serve.state import Limits, build_state
from steer.steering.engine import Steerer
from steer.steering.recipe import InterventionSpec, PromptSpec, load_recipe

pytestmark = pytest.mark.integration

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "steer-sea.yaml"
PROMPTS = ["Tell me about your weekend.", "Describe an old house."]
TOKENS = 24


def steer_run(smollm, recipe, prompt: str, **update) -> str:
    one = recipe.model_copy(update={"prompts": [PromptSpec(text=prompt)], **update})
    return Steerer(one, model=smollm).run(baseline=False).results[0].steered


@pytest.fixture(scope="module")
def served(smollm):
    recipe = load_recipe(RECIPE)
    gen = recipe.generation.model_copy(update={"max_new_tokens": TOKENS})
    recipe = recipe.model_copy(update={"generation": gen})
    state = build_state(recipe, Limits(), model=smollm)
    with running(state) as url:
        from openai import OpenAI

        yield OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300), recipe


def ask(client, prompt: str, **kwargs) -> str:
    response = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        **kwargs,
    )
    return response.choices[0].message.content


def test_served_recipe_equals_steer_run(served, smollm):
    client, recipe = served
    for prompt in PROMPTS:
        assert ask(client, prompt) == steer_run(smollm, recipe, prompt)


def test_request_edits_equal_recipe_edits_concurrently(served, smollm):
    client, recipe = served
    edits = [
        [{"plugin": "add", "sae": "res12", "features": ["royalty"], "value": 35.0}],
        [{"plugin": "ablate", "sae": "res12", "features": ["sea"]}],
    ]

    def request(k: int) -> str:
        body = {"steer": {"replace": True, "interventions": edits[k]}}
        return ask(client, PROMPTS[k], extra_body=body)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        served_texts = list(pool.map(request, range(2)))
    for k, text in enumerate(served_texts):
        own = [InterventionSpec.model_validate(edit) for edit in edits[k]]
        assert text == steer_run(smollm, recipe, PROMPTS[k], interventions=own)
    assert served_texts[0] != steer_run(smollm, recipe, PROMPTS[0])
