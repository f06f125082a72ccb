"""``steer features index/show/search/dashboard`` on the command line (tiny model standing in
for SmolLM2): what they print, and one line with exit code 2 for bad input."""

from __future__ import annotations

import json
import math

import pytest
from support.cli_helpers import assert_one_line_error, call
from support.feature_index import D_SAE, build_small_index
from support.sae_factory import make_sae

from steer.features.store import FeatureIndex
from steer.sae import save_sae
from steer.sae.labels import Label, save_labels


@pytest.fixture
def indexed(tmp_path, tiny_model):
    """An SAE folder with a complete index and two labels; returns (folder, alive feature)."""
    folder, *_ = build_small_index(tmp_path, tiny_model)
    with FeatureIndex.open(folder) as index:
        alive = max(range(D_SAE), key=lambda f: index.feature(f).max_act)
    save_labels(folder, {alive: Label("strongest", "fires hardest of all"), 0: Label("zeroth")})
    return folder, alive


@pytest.fixture
def use_tiny(monkeypatch, tiny_model):
    import steer.model

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)


def test_show_by_id_and_by_label(indexed, capsys):
    folder, alive = indexed
    code, out, _ = call(["features", "show", str(folder), str(alive), "--json"], capsys)
    assert code == 0
    by_id = json.loads(out)
    assert by_id["id"] == alive and by_id["label"]["name"] == "strongest"
    assert len(by_id["contexts"]) == 4 and len(by_id["top_logits"]) == 10
    code, out, _ = call(["features", "show", str(folder), "STRONGEST", "--json"], capsys)
    assert code == 0 and json.loads(out) == by_id


def test_show_renders_contexts_in_the_terminal(indexed, capsys):
    folder, alive = indexed
    code, out, _ = call(["features", "show", str(folder), str(alive)], capsys)
    assert code == 0
    with FeatureIndex.open(folder) as index:
        record = index.feature(alive)
    assert f"feature {alive}" in out and "strongest" in out and "fires hardest" in out
    focus = record.contexts[0]
    assert focus.tokens[focus.focus].strip() in out
    assert f"{record.contexts[0].act:.2f}" in out
    # A few quantile samples per band, the strongest sample first.
    assert "quantile samples (24 random firing tokens, 2 per band)" in out
    assert "75-100%" in out and "0-25%" in out
    assert f"{record.samples[0].act:.2f}" in out


@pytest.mark.parametrize(
    ("ref", "fragments"),
    [
        ("9999", ["feature id 9999 out of range [0, 48)"]),
        ("strongst", ["unknown label 'strongst'", "did you mean 'strongest'"]),
    ],
)
def test_show_unknown_feature(indexed, capsys, ref, fragments):
    folder, _ = indexed
    code, _, err = call(["features", "show", str(folder), ref], capsys)
    assert_one_line_error(code, err, *fragments)


def test_show_without_an_index_says_how_to_build_it(tmp_path, capsys):
    save_sae(make_sae("topk", d_in=64, d_sae=8, k=2, layer=2), tmp_path / "sae")
    code, _, err = call(["features", "show", str(tmp_path / "sae"), "1"], capsys)
    assert_one_line_error(
        code, err, "no feature index for", f"steer features index {tmp_path / 'sae'} --data FILE"
    )


def test_show_unknown_sae(tmp_path, capsys):
    code, _, err = call(["features", "show", str(tmp_path / "nope"), "1"], capsys)
    assert_one_line_error(code, err, "no SAE named", "not a builtin")


def test_show_refuses_an_index_of_other_weights(indexed, capsys):
    folder, alive = indexed
    save_sae(make_sae("topk", d_in=64, d_sae=D_SAE, k=6, layer=2, seed=9), folder)
    code, _, err = call(["features", "show", str(folder), str(alive)], capsys)
    assert_one_line_error(code, err, "built for other weights", "--rebuild")


def test_not_an_index_file(tmp_path, capsys):
    save_sae(make_sae("topk", d_in=64, d_sae=8, k=2, layer=2), tmp_path / "sae")
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_text("this is not sqlite")
    code, _, err = call(
        ["features", "show", str(tmp_path / "sae"), "1", "--db", str(bogus)], capsys
    )
    assert_one_line_error(code, err, "not a feature index")


def test_index_refuses_empty_data_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import steer.model

    def fail(*a, **k):
        raise AssertionError("the model must not load for bad data")

    monkeypatch.setattr(steer.model, "load_model", fail)
    save_sae(make_sae("topk", d_in=64, d_sae=8, k=2, layer=2), tmp_path / "sae")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, _, err = call(["features", "index", str(tmp_path / "sae"), "--data", str(empty)], capsys)
    assert_one_line_error(code, err, "no texts in the data file (it is empty)", str(empty))
    code, _, err = call(
        ["features", "index", str(tmp_path / "sae"), "--data", str(tmp_path / "missing.txt")],
        capsys,
    )
    assert_one_line_error(code, err, "data file not found")


def test_index_command_builds_then_reports_up_to_date(tmp_path, capsys, use_tiny, tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=16, k=3, layer=1)
    save_sae(sae, tmp_path / "sae")
    data = tmp_path / "d.txt"
    data.write_text("The cat sat on the mat. Paris is the capital of France.\n\n" * 30)
    argv = ["features", "index", str(tmp_path / "sae"), "--data", str(data), "--top-k", "3"]
    code, out, err = call(argv, capsys)
    assert code == 0, err
    assert out.startswith("built: ") and "features.sqlite" in out
    code, out, _ = call(argv, capsys)
    assert code == 0 and "up to date" in out
    code, _, err = call([*argv[:-1], "5"], capsys)
    assert_one_line_error(code, err, "different top_k", "--rebuild")


@pytest.mark.parametrize("samples", [0, 2])
def test_index_keeps_as_many_quantile_samples_as_asked(
    tmp_path, capsys, use_tiny, tiny_model, samples
):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=16, k=3, layer=1)
    save_sae(sae, tmp_path / "sae")
    data = tmp_path / "d.txt"
    data.write_text("The cat sat on the mat. Paris is the capital of France.\n\n" * 30)
    argv = ["features", "index", str(tmp_path / "sae"), "--data", str(data)]
    code, _, err = call([*argv, "--samples", str(samples)], capsys)
    assert code == 0, err
    with FeatureIndex.open(tmp_path / "sae") as index:
        counts = [len(index.feature(f).samples or []) for f in range(16)]
    assert max(counts) == samples  # some feature fires often enough to fill them


def test_search_lists_features_with_labels_and_density(indexed, capsys, use_tiny):
    folder, alive = indexed
    text = "The cat sat on the mat & the <dog> ran."
    code, out, err = call(["features", "search", str(folder), text, "--json", "--top", "5"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["text"] == text
    assert "".join(t["token"] for t in result["tokens"]) == text
    assert not result["tokens"][0]["encoded"] and not result["tokens"][0]["features"]
    assert all(len(t["features"]) <= 3 for t in result["tokens"])
    overall = result["overall"]
    assert 0 < len(overall) <= 5
    # Rare features first: activation x log10(1 / density).
    scores = [h["act"] * math.log10(1 / max(h["density"], 1e-6)) for h in overall]
    assert scores == sorted(scores, reverse=True)
    with FeatureIndex.open(folder) as index:
        for hit in overall:
            assert hit["density"] == pytest.approx(index.feature(hit["feature"]).density)
    argv = ["features", "search", str(folder), text, "--json", "--top", "5"]
    code, out, _ = call([*argv, "--rank", "activation"], capsys)
    by_act = json.loads(out)["overall"]
    assert [h["act"] for h in by_act] == sorted((h["act"] for h in by_act), reverse=True)
    per_token_best = max(f["act"] for t in result["tokens"] for f in t["features"])
    assert by_act[0]["act"] == pytest.approx(per_token_best)
    cap = sorted(h["density"] for h in by_act)[len(by_act) // 2]
    code, out, _ = call([*argv, "--max-density", str(cap)], capsys)
    kept = json.loads(out)
    assert kept["overall"] and all(h["density"] <= cap for h in kept["overall"])
    assert all(f["density"] <= cap for t in kept["tokens"] for f in t["features"])
    labelled = [h for h in overall if h["feature"] == alive]
    assert all(h["label"] == "strongest" for h in labelled)


def test_search_table_and_empty_text(indexed, capsys, use_tiny):
    folder, _ = indexed
    code, out, _ = call(["features", "search", str(folder), "The cat sat on the mat."], capsys)
    assert code == 0
    assert "per token" in out and "overall" in out and "' cat'" in out
    code, _, err = call(["features", "search", str(folder), "   "], capsys)
    assert_one_line_error(code, err, "steer features search: argument 2 is empty")


def test_dashboard_command(indexed, tmp_path, capsys):
    folder, alive = indexed
    out_dir = tmp_path / "site"
    code, out, _ = call(
        ["features", "dashboard", str(folder), "--out", str(out_dir), "--features", "5"], capsys
    )
    assert code == 0
    pages = sorted(p.name for p in (out_dir / "features").iterdir())
    assert len(pages) == 5
    assert f"{alive}.html" in pages and "0.html" in pages  # labelled ones come first
    assert "wrote 5 feature pages" in out
    page = (out_dir / "features" / f"{alive}.html").read_text(encoding="utf-8")
    assert 'id="nearest-table"' in page  # the SAE's decoder was read
    # Writing it again replaces the previous dashboard.
    code, out, _ = call(
        ["features", "dashboard", str(folder), "--out", str(out_dir), "--features", "2"], capsys
    )
    assert code == 0 and len(list((out_dir / "features").iterdir())) == 2


def test_dashboard_refuses_a_folder_of_other_files(indexed, tmp_path, capsys):
    folder, _ = indexed
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    planted = {mine / "thesis.tex": "mine", mine / "sub" / "data.csv": "1,2"}
    for path, text in planted.items():
        path.write_text(text)
    argv = ["features", "dashboard", str(folder), "--out", str(mine), "--features", "2"]
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, str(mine), "not a steer dashboard", "--force")
    assert all(path.read_text() == text for path, text in planted.items())
    assert sorted(p.name for p in mine.rglob("*")) == ["data.csv", "sub", "thesis.tex"]
    code, out, _ = call([*argv, "--force"], capsys)
    assert code == 0 and "wrote 2 feature pages" in out
    assert not (mine / "thesis.tex").exists()


def test_a_partial_index_is_refused_by_default_and_shown_with_db(tmp_path, tiny_model, capsys):
    folder, *_, result = build_small_index(tmp_path, tiny_model, stop_after=3, flush_every=3)
    assert result.status == "partial"
    code, _, err = call(["features", "show", str(folder), "1"], capsys)
    assert_one_line_error(code, err, "is not finished", f"--db {result.path}")
    code, out, err = call(["features", "show", str(folder), "1", "--db", str(result.path)], capsys)
    assert code == 0 and "feature 1" in out and "partial" in err
