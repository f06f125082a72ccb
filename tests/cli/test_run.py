"""The CLI: bad input gives one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import json

import pytest
import yaml
from support.cli_helpers import RESULT_KEYS, assert_one_line_error, call
from support.sae_factory import make_sae

from steer.cli import main
from steer.sae import save_sae


def write_recipe(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def sae_path(tmp_path):
    path = tmp_path / "sae"
    save_sae(make_sae(d_in=576, d_sae=64, layer=12, seed=0), path)
    return path


def recipe_data(sae_path, **overrides):
    data = {
        "saes": [{"id": "res12", "path": str(sae_path)}],
        "prompts": ["What is the capital of France?"],
        "interventions": [{"plugin": "clamp", "sae": "res12", "features": [3], "value": 5.0}],
    }
    data.update(overrides)
    return data


def test_check_accepts_a_good_recipe(tmp_path, sae_path, capsys):
    code, out, _ = call(["check", str(write_recipe(tmp_path, recipe_data(sae_path)))], capsys)
    assert code == 0
    assert out.startswith("ok: ")


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"bogus": 1}, ["bogus: unknown key"]),
        ({"prompts": []}, ["prompts: the prompt list is empty"]),
        (
            {"interventions": [{"plugin": "frobnicate", "sae": "res12", "features": [3]}]},
            ["interventions[0].plugin", "unknown intervention plugin 'frobnicate'", "clamp"],
        ),
        (
            {
                "interventions": [
                    {"plugin": "clamp", "sae": "res12", "features": [1, 9999], "value": 1.0}
                ]
            },
            ["interventions[0].features[1]: feature 9999 is out of range (SAE res12 has 64)"],
        ),
        (
            {"interventions": [{"plugin": "clamp", "sae": "res12", "features": [1]}]},
            ["interventions[0]: intervention 'clamp' needs a `value`"],
        ),
        (
            {"monitors": [{"plugin": "nope", "sae": "res12", "features": [1]}]},
            ["monitors[0].plugin: unknown monitor plugin 'nope'"],
        ),
    ],
)
def test_check_rejects_bad_recipes(tmp_path, sae_path, capsys, overrides, fragments):
    path = write_recipe(tmp_path, recipe_data(sae_path, **overrides))
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, str(path), *fragments)


def test_malformed_yaml(tmp_path, capsys):
    path = write_recipe(tmp_path, "prompts: [unclosed\n")
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, "malformed YAML", f"{path}:")


def test_missing_sae_files(tmp_path, capsys):
    path = write_recipe(tmp_path, recipe_data(tmp_path / "no-such-sae"))
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, "no-such-sae")


def test_corrupt_sae_weights_fail_at_run_before_generating(tmp_path, sae_path, capsys):
    (sae_path / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    path = write_recipe(tmp_path, recipe_data(sae_path))
    code, _, err = call(["run", str(path)], capsys)
    assert_one_line_error(code, err, "sae_weights.safetensors")


def test_unknown_builtin_sae(tmp_path, capsys):
    data = recipe_data(None)
    data["saes"] = [{"id": "res12", "builtin": "nonexistent"}]
    code, _, err = call(["check", str(write_recipe(tmp_path, data))], capsys)
    assert_one_line_error(code, err, "saes[0]", "unknown builtin SAE 'nonexistent'")


def test_missing_recipe_file(tmp_path, capsys):
    code, _, err = call(["run", str(tmp_path / "nope.yaml")], capsys)
    assert_one_line_error(code, err, "recipe file not found")


def test_debug_shows_the_traceback(tmp_path):
    path = write_recipe(tmp_path, "prompts: [unclosed\n")
    from steer.errors import SteerError

    with pytest.raises(SteerError):
        main(["check", str(path), "--debug"])


def test_usage_errors_exit_2(capsys):
    code, _, err = call(["run"], capsys)
    assert code == 2
    assert "Traceback" not in err


def test_plugins_lists_what_each_provides(capsys):
    code, out, _ = call(["plugins"], capsys)
    assert code == 0
    for name in ("ablate", "clamp", "scale", "add", "threshold", "standard", "topk", "jumprelu"):
        assert name in out


def test_json_output_shape(tmp_path, capsys, monkeypatch, tiny_model):
    """--json prints exactly one object with results and timing (tiny model stands in)."""
    import steer.model

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)
    sae = tmp_path / "tiny_sae"
    save_sae(make_sae(d_in=tiny_model.d_model, d_sae=32, layer=1, seed=0), sae)
    data = recipe_data(sae, generation={"max_new_tokens": 5})
    code, out, _ = call(["run", str(write_recipe(tmp_path, data)), "--json", "-n", "4"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert set(payload) == {"results", "timing"}
    assert set(payload["results"][0]) == RESULT_KEYS


def _label(sae_path, **names):
    from steer.sae.labels import Label, save_labels

    save_labels(sae_path, {int(fid[1:]): Label(name) for fid, name in names.items()})


def test_check_resolves_feature_labels(tmp_path, sae_path, capsys):
    _label(sae_path, f3="sea", f7="royalty")
    data = recipe_data(
        sae_path,
        interventions=[{"plugin": "add", "sae": "res12", "features": ["Sea", 5], "value": 2.0}],
        monitors=[{"sae": "res12", "features": ["royalty"]}],
    )
    code, out, err = call(["check", str(write_recipe(tmp_path, data))], capsys)
    assert code == 0, err
    assert out.startswith("ok: ")


def test_check_unknown_label_suggests_the_close_one(tmp_path, sae_path, capsys):
    _label(sae_path, f3="sea")
    data = recipe_data(
        sae_path,
        interventions=[{"plugin": "add", "sae": "res12", "features": ["seaa"], "value": 2.0}],
    )
    path = write_recipe(tmp_path, data)
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(
        code,
        err,
        f"{path}: interventions[0].features[0]: unknown label 'seaa' for SAE sae "
        "(did you mean 'sea'?)",
    )


def test_check_label_on_an_sae_without_labels_file(tmp_path, sae_path, capsys):
    data = recipe_data(sae_path, monitors=[{"sae": "res12", "features": ["sea"]}])
    code, _, err = call(["check", str(write_recipe(tmp_path, data))], capsys)
    assert_one_line_error(
        code, err, "monitors[0].features[0]: unknown label 'sea' for SAE sae", "no labels.json"
    )


def test_check_label_naming_a_feature_out_of_range(tmp_path, sae_path, capsys):
    _label(sae_path, f64="too-far")  # the SAE has 64 features: 0..63
    data = recipe_data(sae_path, monitors=[{"sae": "res12", "features": ["too-far"]}])
    code, _, err = call(["check", str(write_recipe(tmp_path, data))], capsys)
    assert_one_line_error(code, err, "label 'too-far' names feature 64, out of range [0, 64)")
