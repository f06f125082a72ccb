"""``steer eval`` end to end on the tiny model (the CLI loads it by name), and its bad input:
one line, exit 2."""

from __future__ import annotations

import json

import yaml
from support.cli_helpers import assert_one_line_error, call
from support.handmade import orthonormal_sae

from steer.sae import save_sae


def write_recipe(tmp_path, tiny_model):
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=32, layer=1), tmp_path / "sae")
    recipe = {
        "saes": [{"id": "s", "path": "sae"}],
        "generation": {"max_new_tokens": 3, "batch_size": 4},
        "prompts": ["hi"],
        "interventions": [{"plugin": "add", "sae": "s", "features": [3], "value": 4.0}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\nParis is\nOnce upon a time\nThe dog ran\n")
    return path, prompts


def test_eval_writes_json_and_report_and_resumes(tmp_path, tiny_everywhere, capsys):
    recipe, prompts = write_recipe(tmp_path, tiny_everywhere)
    out = tmp_path / "out"
    argv = ["eval", str(recipe), "--concept", "sea", "--prompts", str(prompts), "--strengths",
            "1", "--kl-windows", "1", "--bootstrap", "20", "--out", str(out), "--json"]  # fmt: skip
    code, stdout, err = call(argv, capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert [r["arm"] for r in result["table"]] == ["none", "prompt", "diffmean@1", "recipe@1"]
    assert result["judges"] == ["lexicon"] and result["concept"] == "sea"
    assert (out / "report.html").is_file() and (out / "eval.json").is_file()
    assert sorted(p.name for p in (out / "arms").iterdir()) == [
        "diffmean@1.json", "none.json", "prompt.json", "recipe@1.json"]  # fmt: skip
    code, stdout, err = call([*argv[:-1]], capsys)  # the table this time, from the records
    assert code == 0 and "ppl ratio" in stdout and "recipe@1" in stdout


def test_bad_input_is_one_line(tmp_path, tiny_everywhere, capsys):
    recipe, prompts = write_recipe(tmp_path, tiny_everywhere)
    base = ["eval", str(recipe), "--prompts", str(prompts)]
    empty = tmp_path / "pos.txt"
    empty.write_text("\n  \n")
    for extra, fragment in [
        (["--concept", "sea", "--judge", "magic"], "unknown judge 'magic' (known: "),
        (["--concept", "tea"], "unknown concept 'tea'"),
        (["--concept", "tea", "--keywords", "qqqzzz"], "concept 'tea' has no positive texts"),
        (["--concept", "sea", "--pos", str(empty)], "no texts in the file"),
    ]:
        code, _, err = call([*base, *extra], capsys)
        assert_one_line_error(code, err, fragment)


def test_concept_sets_read_lines_or_jsonl(tmp_path):
    import pytest

    from steer.cli.eval import read_set
    from steer.errors import SteerError

    lines = tmp_path / "pos.txt"
    lines.write_text("the sea\n\n a ship \n")
    assert read_set(lines) == ["the sea", "a ship"]
    records = tmp_path / "pos.jsonl"
    records.write_text('{"text": "the sea"}\n{"text": "a ship", "label": 1}\n')
    assert read_set(records) == ["the sea", "a ship"]
    records.write_text('{"label": 1}\n')
    with pytest.raises(SteerError, match="needs a text field"):
        read_set(records)
    assert read_set(None) is None
