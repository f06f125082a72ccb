"""The recipe schema: valid recipes parse, and every mistake names its field path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steer.errors import SteerError
from steer.steering.recipe import load_recipe, parse_recipe

BASE = {"saes": [{"id": "res", "path": "sae"}], "prompts": ["hi"]}


def recipe_with(**overrides):
    return {**BASE, **overrides}


def error_of(data) -> str:
    with pytest.raises(SteerError) as info:
        parse_recipe(data, source="r.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_recipe_gets_defaults():
    recipe = parse_recipe({"prompts": ["hello"]})
    assert recipe.model == "smollm2-135m-instruct"
    assert recipe.prompts[0].text == "hello"
    assert recipe.generation.max_new_tokens == 40
    assert recipe.generation.temperature == 0.0


def test_prompt_with_own_interventions_adds_to_recipe_level_ones():
    recipe = parse_recipe(
        recipe_with(
            interventions=[{"plugin": "ablate", "sae": "res", "features": [1]}],
            prompts=[
                "plain",
                {
                    "text": "own",
                    "interventions": [
                        {"plugin": "clamp", "sae": "res", "features": [2], "value": 3}
                    ],
                },
                {"text": "alone", "inherit_interventions": False},
            ],
        )
    )
    assert [s.plugin for s in recipe.interventions_for(recipe.prompts[0])] == ["ablate"]
    assert [s.plugin for s in recipe.interventions_for(recipe.prompts[1])] == ["ablate", "clamp"]
    assert recipe.interventions_for(recipe.prompts[2]) == []


def test_recipe_is_frozen():
    recipe = parse_recipe({"prompts": ["hello"]})
    with pytest.raises(ValidationError):
        recipe.model = "other"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (recipe_with(bogus=1), "r.yaml: bogus: unknown key"),
        (recipe_with(generation={"temprature": 1.0}), "generation.temprature: unknown key"),
        (
            recipe_with(generation={"max_new_tokens": "many"}),
            "generation.max_new_tokens: Input should be a valid integer",
        ),
        (recipe_with(generation={"max_new_tokens": 0}), "generation.max_new_tokens"),
        (recipe_with(prompts=[]), "prompts: the prompt list is empty"),
        (recipe_with(prompts=[""]), "prompts[0].text"),
        (
            recipe_with(interventions=[{"plugin": "clamp", "sae": "res", "features": [1.5]}]),
            "interventions[0].features[0]: a feature is an id (integer) or a label (string), "
            "got 1.5",
        ),
        (
            recipe_with(interventions=[{"plugin": "clamp", "sae": "res", "features": [-1]}]),
            "interventions[0].features[0]: Input should be greater than or equal to 0",
        ),
        (
            recipe_with(interventions=[{"plugin": "clamp", "sae": "other", "features": [1]}]),
            "interventions[0].sae: unknown SAE 'other' (known: 'res')",
        ),
        (
            recipe_with(
                prompts=[
                    {"text": "x", "interventions": [{"plugin": "a", "sae": "zz", "features": [1]}]}
                ]
            ),
            "prompts[0].interventions[0].sae: unknown SAE 'zz'",
        ),
        (
            recipe_with(
                interventions=[
                    {"plugin": "clamp", "sae": "res", "features": [1], "positions": "gen"}
                ]
            ),
            "interventions[0].positions: Input should be 'prompt', 'generated' or 'all'",
        ),
        (
            recipe_with(saes=[{"id": "a", "path": "x", "builtin": "y"}]),
            "saes[0]: give exactly one of path, builtin, hf or release",
        ),
        (
            recipe_with(saes=[{"id": "res", "path": "x"}, {"id": "res", "path": "y"}]),
            "saes[1].id: duplicate SAE id 'res'",
        ),
        (recipe_with(saes=[{"id": "res", "path": "x", "layer": -1}]), "saes[0].layer"),
        ([1, 2], "a recipe must be a mapping of keys, got a list"),
        (None, "a recipe must be a mapping of keys, got empty"),
    ],
)
def test_errors_name_the_field(data, expected):
    assert expected in error_of(data)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prompts:\n  - hi\n generation: [\n")
    with pytest.raises(SteerError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "malformed YAML" in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(SteerError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_sae_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.yaml"
    path.write_text("saes:\n  - {id: res, path: ../my_sae}\nprompts: [hi]\n")
    recipe = load_recipe(path)
    assert recipe.saes[0].path == str(tmp_path / "my_sae")


def test_features_may_be_ids_or_labels():
    recipe = parse_recipe(
        recipe_with(
            interventions=[{"plugin": "add", "sae": "res", "features": [3, "sea"], "value": 1.0}],
            monitors=[{"sae": "res", "features": ["ships"]}],
        )
    )
    assert recipe.interventions[0].features == [3, "sea"]
    assert recipe.monitors[0].features == ["ships"]


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        (
            True,
            "monitors[0].features[0]: a feature is an id (integer) or a label (string), got True",
        ),
        (
            None,
            "monitors[0].features[0]: a feature is an id (integer) or a label (string), got None",
        ),
        ("  ", "monitors[0].features[0]: a feature label must not be empty"),
    ],
)
def test_feature_refs_are_strictly_int_or_str(feature, expected):
    assert expected in error_of(recipe_with(monitors=[{"sae": "res", "features": [feature]}]))
