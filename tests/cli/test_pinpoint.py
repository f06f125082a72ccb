"""`steer pinpoint`: recipe schema, bad input (one line, exit 2), outputs, the plugin hook."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call
from support.sae_factory import make_sae

from steer.corpus.shipped import shipped_text
from steer.errors import SteerError
from steer.pinpoint import Pinpointer, load_pinpoint_recipe, parse_pinpoint_recipe
from steer.pinpoint.methods import ATTRIBUTION_METHODS, AttributionMethod
from steer.plugins.hookspecs import hookimpl
from steer.plugins.manager import get_plugin_manager
from steer.plugins.registry import registry
from steer.sae import save_sae
from steer.steering.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["The cat sat on the", "A dog ran in the", "The dog sat on"]


@pytest.fixture
def sae_path(tmp_path):
    path = tmp_path / "sae"
    save_sae(make_sae(d_in=64, d_sae=48, layer=1, seed=0), path)
    return path


def recipe_data(sae_path, **overrides):
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae_path)}],
        "prompts": PROMPTS,
        "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
        "top_k": 6,
        "curve_max": 8,
    }
    data.update(overrides)
    return data


def write(tmp_path, data, name="pinpoint.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- schema and bad input


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"prompts": []}, "prompts: the prompt list is empty"),
        ({"counterfactuals": ["x"]}, "counterfactuals: 1 counterfactual prompts for 3 prompts"),
        ({"metric": {}}, "metric: give exactly one of logit_diff or logprob"),
        ({"metric": {"logit_diff": {"target": " cat"}}}, "metric.logit_diff.foil: required field"),
        ({"ablation": "half"}, "ablation: Input should be 'zero' or 'mean'"),
        ({"top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"saes": []}, "saes: must not be empty"),
        ({"prompts": ["ok", "  "]}, "prompts[1].text: the prompt is blank"),
        ({"counterfactuals": ["a", "b", " "]}, "counterfactuals: item 2 is blank"),
        (
            {"metric": {"logprob": {"target": " cat"}}, "prompts": [{"text": "a", "foil": " b"}]},
            "prompts[0].foil: a logprob metric has no foil",
        ),
        ({"prompts": [{"text": "a", "answer": " b"}]}, "prompts[0].answer: unknown key"),
    ],
)
def test_bad_recipes_fail_in_one_line_with_exit_2(tmp_path, sae_path, capsys, change, fragment):
    path = write(tmp_path, recipe_data(sae_path, **change))
    with pytest.raises(SteerError, match="^" + str(path)):
        load_pinpoint_recipe(path)
    code, _, err = call(["pinpoint", str(path)], capsys)
    assert_one_line_error(code, err, str(path), fragment)


def test_targets_that_are_not_single_tokens_say_how_they_tokenize(
    tmp_path, sae_path, tiny_everywhere, capsys
):
    # The tiny tokenizer splits " she" into "Ġs" + "he".
    path = write(tmp_path, recipe_data(sae_path, metric={"logprob": {"target": " she"}}))
    code, _, err = call(["pinpoint", str(path)], capsys)
    assert_one_line_error(
        code, err, "metric.logprob.target", "' she' is not a single token", "2 tokens", "'Ġs'"
    )


def test_the_foil_is_checked_too(sae_path, tiny_model):
    data = recipe_data(sae_path, metric={"logit_diff": {"target": " cat", "foil": " he"}})
    with pytest.raises(SteerError, match=r"metric.logit_diff.foil: ' he' is not a single token"):
        Pinpointer(parse_pinpoint_recipe(data), model=tiny_model)


def test_an_unknown_method_lists_the_known_ones(sae_path, tiny_model):
    data = recipe_data(sae_path, method="magic")
    with pytest.raises(
        SteerError, match=r"unknown attribution method 'magic'.*attribution_patching"
    ):
        Pinpointer(parse_pinpoint_recipe(data), model=tiny_model)


def test_relative_paths_are_relative_to_the_recipe(tmp_path, sae_path):
    (tmp_path / "sub").mkdir()
    data = recipe_data(sae_path, side_effect_data="text.txt")
    data["saes"][0]["path"] = "../sae"
    recipe = load_pinpoint_recipe(write(tmp_path / "sub", data))
    assert Path(recipe.saes[0].path) == sae_path.resolve()
    assert Path(recipe.side_effect_data) == (tmp_path / "sub" / "text.txt").resolve()


def test_the_shipped_gender_recipe_is_valid():
    recipe = load_pinpoint_recipe(ROOT / "recipes" / "pinpoint-gender.yaml")
    assert recipe.metric.logit_diff.target == " he"
    assert recipe.metric.logit_diff.foil == " she"
    assert len(recipe.prompts) >= 40
    assert all(p.text.startswith("The ") and not p.text.endswith(" ") for p in recipe.prompts)
    # The side-effect text ships with steer (a clone has no ../shared/corpus).
    assert recipe.side_effect_data == str(shipped_text("wikitext2-excerpt"))


# ---------------------------------------------------------------- a full run and its outputs


def test_pinpoint_writes_json_plots_and_a_steering_recipe(
    tmp_path, sae_path, tiny_everywhere, capsys
):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["The cat sat on the mat. The dog ran in the park."] * 60))
    path = write(
        tmp_path, recipe_data(sae_path, side_effect_data=str(text), side_effect_tokens=256)
    )
    out, steering = tmp_path / "out", tmp_path / "ablate.yaml"
    argv = ["pinpoint", str(path), "--json", "--out", str(out), "--write-recipe", str(steering)]
    code, stdout, _ = call(argv, capsys)
    assert code == 0
    result = json.loads(stdout)
    assert json.loads((out / "pinpoint.json").read_text()) == result
    site = result["sites"][0]
    assert set(site) >= {"features", "neurons", "ce_clean", "side_effect_tokens"}
    for kind in ("features", "neurons"):
        assert len(site[kind]["ranked"]) == 6
        assert [p["n"] for p in site[kind]["curve"]] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
        for effect in site[kind]["side_effects"]:
            assert effect["delta"] == pytest.approx(effect["ce"] - site["ce_clean"])
    html = (out / "curve.html").read_text()
    assert html.count("<svg") == 1 and "<polyline" in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    if importlib.util.find_spec("matplotlib") is not None:  # the PNG is optional
        assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert not (out / "curve.png").exists()
    # The steering recipe is valid and ablates the top features of the ranking.
    recipe = load_recipe(steering)
    step = recipe.interventions[0]
    assert step.plugin == "ablate" and step.sae == "s"
    n = site["features"]["n_for_half"] or 6
    assert step.features == site["features"]["order"][:n]
    assert site["features"]["order"][:6] == [r["node"] for r in site["features"]["ranked"]]


def test_pinpoint_prints_ranked_tables(tmp_path, sae_path, tiny_everywhere, capsys):
    path = write(tmp_path, recipe_data(sae_path, neuron_baseline=False))
    code, stdout, _ = call(["pinpoint", str(path), "--rows", "3"], capsys)
    assert code == 0
    assert "top features" in stdout and "verified effect" in stdout
    assert "top neurons" not in stdout
    assert "attribution vs verified effect (top 6)" in stdout


# ---------------------------------------------------------------- the plugin hook


def test_builtin_methods_come_from_the_pinpoint_plugin():
    methods = registry(get_plugin_manager(), ATTRIBUTION_METHODS)
    assert methods["attribution_patching"].plugin == "pinpoint"
    assert methods["integrated_gradients"].plugin == "pinpoint"


class _SignFlip:
    """A third-party method: minus attribution patching (so the ranking reverses)."""

    @hookimpl
    def steer_register_attribution_methods(self, register):
        def score(ctx):
            nodes, err = ctx.score(ctx.gradients(0.0))
            return -nodes, None if err is None else -err

        register(AttributionMethod("flipped", score, "negated attribution patching"))


def test_a_plugin_can_add_an_attribution_method(sae_path, tiny_model):
    pm = get_plugin_manager()
    pm.register(_SignFlip(), name="signflip")
    base = parse_pinpoint_recipe(recipe_data(sae_path, neuron_baseline=False, rank="magnitude"))
    plain = Pinpointer(base, model=tiny_model, pm=pm).run().to_dict()
    flipped_recipe = base.model_copy(update={"method": "flipped"})
    flipped = Pinpointer(flipped_recipe, model=tiny_model, pm=pm).run().to_dict()
    a = plain["sites"][0]["features"]
    b = flipped["sites"][0]["features"]
    assert flipped["method"] == "flipped"
    assert [r["node"] for r in a["ranked"]] == [r["node"] for r in b["ranked"]]
    assert [r["attribution"] for r in b["ranked"]] == [-r["attribution"] for r in a["ranked"]]
    assert b["error_attribution"] == -a["error_attribution"]
    # Verification does not depend on the method.
    assert [r["verified_effect"] for r in b["ranked"]] == [
        r["verified_effect"] for r in a["ranked"]
    ]


def test_registering_a_method_name_twice_keeps_the_first():
    class Twice:
        @hookimpl
        def steer_register_attribution_methods(self, register):
            register(AttributionMethod("attribution_patching", lambda ctx: None))

    pm = get_plugin_manager()
    pm.register(Twice(), name="twice")
    methods = registry(pm, ATTRIBUTION_METHODS)
    assert methods["attribution_patching"].plugin == "pinpoint"
    assert "registered twice: by plugin 'pinpoint' and by 'twice'" in pm.failures[0].error


def test_labels_beside_the_sae_name_the_features(tmp_path, sae_path, tiny_everywhere, capsys):
    features = {str(i): {"name": f"feat-{i}", "source": "manual"} for i in range(48)}
    (sae_path / "labels.json").write_text(
        json.dumps({"format": "steer-labels/1", "sae": "sae", "features": features})
    )
    path = write(tmp_path, recipe_data(sae_path, neuron_baseline=False))
    code, stdout, _ = call(["pinpoint", str(path), "--json"], capsys)
    assert code == 0
    ranked = json.loads(stdout)["sites"][0]["features"]["ranked"]
    assert [r["label"] for r in ranked] == [f"feat-{r['node']}" for r in ranked]
    code, stdout, _ = call(["pinpoint", str(path)], capsys)
    assert f"feat-{ranked[0]['node']}" in stdout


def test_prompts_can_name_their_own_target_and_foil(sae_path, tiny_model):
    swapped = {"text": PROMPTS[0], "target": " dog", "foil": " cat"}
    data = recipe_data(sae_path, prompts=[swapped, PROMPTS[0]], neuron_baseline=False)
    result = Pinpointer(parse_pinpoint_recipe(data), model=tiny_model).run().to_dict()
    own, default = result["clean_metric_per_prompt"]
    assert default != 0
    assert own == pytest.approx(-default, abs=1e-5)
    assert result["clean_metric"] == pytest.approx(0.0, abs=1e-5)
    assert "some prompts name their own target/foil" in result["metric"]


def test_a_prompts_own_target_must_be_a_single_token(sae_path, tiny_model):
    data = recipe_data(sae_path, prompts=[PROMPTS[0], {"text": PROMPTS[1], "target": " he"}])
    with pytest.raises(SteerError, match=r"prompts\[1\].target: ' he' is not a single token"):
        Pinpointer(parse_pinpoint_recipe(data), model=tiny_model)
