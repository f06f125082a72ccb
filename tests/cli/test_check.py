"""``steer check`` knows every recipe kind steer has, checks each as far as it can without a
model, and answers without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call

REPO = Path(__file__).resolve().parents[2]
KINDS = {
    "train-smollm2-res12.yaml": "training",
    "pinpoint-gender.yaml": "pinpoint",
}


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_checks(recipe, capsys, monkeypatch):
    monkeypatch.delenv("STEER_CORPUS", raising=False)  # as on a fresh clone
    code, out, err = call(["check", str(recipe)], capsys)
    assert code == 0, err
    assert out.startswith(f"ok: {recipe} ({KINDS.get(recipe.name, 'steering')} recipe:")


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"data": [{"path": "missing.txt"}], "out": "o"}, ["data[0].path: data file not found"]),
        ({"data": [{"path": "x"}], "out": "o", "k": 0}, ["k: Input should be greater"]),
        (
            {"saes": [{"id": "s", "builtin": "smollm2-135m-res12-topk"}], "prompts": ["a"],
             "metric": {"logit_diff": {"target": " he", "foil": " she"}}, "method": "guess"},
            ["method: unknown attribution method 'guess'"],
        ),
        (
            {"saes": [{"id": "s", "builtin": "nope"}], "prompts": ["a"],
             "metric": {"logit_diff": {"target": " he", "foil": " she"}}},
            ["saes[0]: unknown builtin SAE 'nope'"],
        ),
    ],
)  # fmt: skip
def test_training_and_pinpoint_recipes_are_checked(tmp_path, capsys, data, fragments):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, str(path), *fragments)


def test_check_does_not_import_torch():
    code = (
        "import sys\nfrom steer.cli import main\n"
        f"try:\n    main(['check', {str(REPO / 'recipes' / 'demo.yaml')!r}])\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_negative_threshold_is_accepted_with_a_warning(tmp_path, capsys, caplog):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "saes": [{"id": "s", "builtin": "smollm2-135m-res12-topk"}],
                "prompts": ["hi"],
                "monitors": [{"sae": "s", "features": [1], "threshold": -1}],
            }
        )
    )
    code, out, _ = call(["check", str(path)], capsys)
    assert code == 0 and out.startswith("ok:")
    assert "fires on every token" in caplog.text
