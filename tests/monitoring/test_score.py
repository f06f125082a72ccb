"""``steer monitor score``: a group's score is the max over its features and the text's kept
positions; only the watched features are encoded; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from support.cli_helpers import assert_one_line_error, call
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.monitoring.score import WatchedGroup, score_texts, watched_groups
from steer.sae import save_sae
from steer.sae.labels import Label, save_labels
from steer.steering.recipe import Recipe

LAYER = 2
TEXT = "The cat sat on the mat."


def hidden_states(model, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and the residual stream after block LAYER, straight from transformers."""
    ids = torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.hf(ids, output_hidden_states=True)
    return ids[0], out.hidden_states[LAYER + 1][0]


def projection_sae(model, directions: torch.Tensor):
    """A ReLU SAE whose feature j is ``relu(x . directions[j])``: its activation at a token is
    known exactly from the residual stream."""
    sae = make_sae("standard", d_in=model.d_model, d_sae=8, layer=LAYER, apply_b_dec_to_input=False)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, : len(directions)] = directions.T
    return sae


@pytest.fixture
def probe_text(tiny_model):
    """Token ids, hidden states and an SAE: feature 0 points at position 0 (never kept),
    feature 1 at the token at position 3 (kept)."""
    ids, h = hidden_states(tiny_model, TEXT)
    assert len(ids) > 4
    dirs = torch.stack([h[0] / h[0].norm(), h[3] / h[3].norm()])
    return ids, h, projection_sae(tiny_model, dirs)


def threshold_group(pm, name: str, features: tuple[int, ...], threshold: float) -> WatchedGroup:
    """A group watched by the built-in ``threshold`` monitor, as a checked recipe gives it."""
    from steer.plugins.registry import registry
    from steer.steering.monitors import MONITORS
    from steer.steering.recipe import MonitorSpec

    spec = MonitorSpec.model_validate(
        {"sae": "s", "features": list(features), "name": name, "threshold": threshold}
    )
    monitor = registry(pm, MONITORS).get("threshold", where="test")
    return WatchedGroup(name, "s", features, monitor, spec)


def test_score_is_the_max_over_features_and_kept_positions(pm, tiny_model, probe_text):
    ids, h, sae = probe_text
    groups = [
        threshold_group(pm, "first", (0,), 0.0),
        threshold_group(pm, "known", (1,), 1e9),
        threshold_group(pm, "both", (0, 1), 0.0),
    ]
    (row,) = score_texts(tiny_model, {"s": sae}, groups, [TEXT], progress=False)
    proj = torch.relu(h @ sae.W_enc[:, :2]).detach()  # [T, 2], every position
    kept = proj[1:]  # position 0 is skipped; the text has no special token
    assert row.n_tokens == len(ids) and row.n_kept == len(ids) - 1
    assert row.scores["first"] == pytest.approx(float(kept[:, 0].max()), rel=1e-4)
    assert row.scores["known"] == pytest.approx(float(kept[:, 1].max()), rel=1e-4)
    assert row.scores["known"] >= float(h[3].norm()) * (1 - 1e-4)  # the known token fires
    assert row.scores["both"] == pytest.approx(float(kept.max()), rel=1e-4)
    # Feature 0 points at position 0, which would have scored |h0|: it was skipped.
    assert row.scores["first"] < float(h[0].norm()) * 0.999
    assert row.fired == {"first": True, "known": False, "both": True}


def test_only_watched_features_are_encoded(pm, tiny_model, probe_text, monkeypatch):
    _, _, sae = probe_text
    asked: list[list[int]] = []
    real = sae.encode_features

    def no_full_encode(x):
        raise AssertionError("the whole SAE was encoded")

    def spy(x, idx):
        asked.append(torch.as_tensor(idx).tolist())
        return real(x, idx)

    monkeypatch.setattr(sae, "encode", no_full_encode)
    monkeypatch.setattr(sae, "encode_features", spy)
    groups = [threshold_group(pm, "a", (5, 1), 0.0), threshold_group(pm, "b", (1,), 0.0)]
    rows = score_texts(tiny_model, {"s": sae}, groups, [TEXT, "", "A dog."], progress=False)
    assert asked and all(idx == [1, 5] for idx in asked)
    assert rows[1].n_tokens == 0 and rows[1].scores == {"a": 0.0, "b": 0.0}
    assert rows[0].scores["a"] >= rows[0].scores["b"] > 0


@pytest.fixture
def sae_folder(tmp_path, tiny_model, probe_text):
    folder = tmp_path / "sae"
    save_sae(probe_text[2], folder)
    save_labels(folder, {1: Label("known-token")})
    return folder


def recipe_yaml(tmp_path, folder, monitor: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"model: tiny\nsaes:\n  - {{id: s, path: {folder}}}\nprompts: [hello]\n"
        f"monitors:\n  - {monitor}\n"
    )
    return str(path)


def test_groups_resolve_labels_and_name_unnamed_monitors(pm, sae_folder):
    recipe = Recipe.model_validate(
        {
            "saes": [{"id": "s", "path": str(sae_folder)}],
            "prompts": ["hi"],
            "monitors": [
                {"sae": "s", "features": ["known-token", 0], "threshold": 2.5, "name": "g"},
                {"sae": "s", "features": [3]},
            ],
        }
    )
    groups = watched_groups(recipe, pm)
    got = [(g.name, g.sae, g.features, g.monitor.name, g.settings) for g in groups]
    assert got == [
        ("g", "s", (1, 0), "threshold", {"threshold": 2.5}),
        ("monitors[1]", "s", (3,), "threshold", {"threshold": 0.0}),  # the plugin's default
    ]
    with pytest.raises(SteerError, match="no monitors"):
        watched_groups(recipe.model_copy(update={"monitors": []}), pm)


@pytest.fixture
def no_model(monkeypatch):
    """Bad input must fail before the model load."""
    import steer.model

    def fail(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(steer.model, "load_model", fail)


@pytest.mark.parametrize(
    ("monitor", "fragments"),
    [
        ("{sae: s, features: [no-such-label]}", ("no-such-label", "monitors[0].features[0]")),
        ("{sae: s, features: [1], threshold: high}", ("threshold",)),
        ("{sae: s, features: [99]}", ("out of range",)),
        (
            "{sae: s, features: [1, 2], plugin: linear, weights: [1.0]}",
            ("monitors[0].weights", "has 1 value for 2 features"),
        ),
        ("{sae: s, features: [1], plugin: linear}", ("monitors[0].weights", "required")),
    ],
)
def test_bad_recipe_is_one_line(tmp_path, sae_folder, capsys, no_model, monitor, fragments):
    texts = tmp_path / "texts.txt"
    texts.write_text("hello there\n")
    path = recipe_yaml(tmp_path, sae_folder, monitor)
    code, _, err = call(["monitor", "score", path, "--input", str(texts)], capsys)
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_missing_or_empty_input_is_one_line(tmp_path, sae_folder, capsys, no_model, content):
    texts = tmp_path / "texts.txt"
    if content is not None:
        texts.write_text(content)
    path = recipe_yaml(tmp_path, sae_folder, "{sae: s, features: [1]}")
    code, _, err = call(["monitor", "score", path, "--input", str(texts)], capsys)
    assert_one_line_error(code, err, "texts.txt")


def test_score_command_json_and_out(tmp_path, sae_folder, capsys, monkeypatch, tiny_model):
    import steer.model

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{TEXT}\nA dog ran.\n")
    path = recipe_yaml(tmp_path, sae_folder, "{sae: s, features: [known-token], name: k}")
    out = tmp_path / "scores.jsonl"
    code, stdout, _ = call(
        ["monitor", "score", path, "--input", str(texts), "--json", "--out", str(out)], capsys
    )
    assert code in (0, None)
    payload = json.loads(stdout)
    assert payload["n_texts"] == 2 and payload["groups"][0]["features"] == [1]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [rec["index"] for rec in lines] == [0, 1]
    assert lines == payload["texts"]
    _, h = hidden_states(tiny_model, TEXT)
    assert lines[0]["scores"]["k"] >= float(h[3].norm()) * (1 - 1e-4)
    # The table never shows the texts themselves.
    code, stdout, _ = call(["monitor", "score", path, "--input", str(texts)], capsys)
    assert "cat" not in stdout and "dog" not in stdout and "k: " in stdout


def linear_group(pm, name, features, weights, bias, threshold) -> WatchedGroup:
    """A group watched by the built-in ``linear`` monitor (a sparse probe's weights)."""
    from steer.plugins.registry import registry
    from steer.steering.monitors import MONITORS
    from steer.steering.recipe import MonitorSpec

    spec = MonitorSpec.model_validate(
        {"sae": "s", "features": list(features), "name": name, "plugin": "linear",
         "weights": weights, "bias": bias, "threshold": threshold}
    )  # fmt: skip
    monitor = registry(pm, MONITORS).get("linear", where="test")
    return WatchedGroup(name, "s", features, monitor, spec)


def test_a_linear_monitor_scores_its_weighted_sum(pm, tiny_model, probe_text):
    _, h, sae = probe_text
    proj = torch.relu(h @ sae.W_enc[:, :2]).detach()[1:]  # kept positions
    groups = [
        linear_group(pm, "low", (0, 1), [0.5, -1.0], 2.0, 1e9),
        linear_group(pm, "fires", (1,), [1.0], -1.0, 0.0),
    ]
    (row,) = score_texts(tiny_model, {"s": sae}, groups, [TEXT], progress=False)
    expected = float((proj @ torch.tensor([0.5, -1.0]) + 2.0).max())
    assert row.scores["low"] == pytest.approx(expected, rel=1e-4)
    assert row.scores["fires"] == pytest.approx(float(proj[:, 1].max()) - 1.0, rel=1e-4)
    assert row.fired == {"low": False, "fires": True}


def test_a_linear_monitor_names_the_feature_that_contributes_most(pm):
    group = linear_group(pm, "g", (3, 9), [1.0, 2.0], 0.0, 1.5)
    acts = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.5, 0.2]]])  # scores 1.0, 3.0, 0.9
    mask = group.monitor.observe(acts, group.spec)
    assert mask.tolist() == [[[False, False], [False, True], [False, False]]]


def test_a_linear_monitor_with_the_wrong_number_of_weights_is_one_line(pm):
    group = linear_group(pm, "g", (3, 9), [1.0], 0.0, 0.0)
    with pytest.raises(SteerError, match="1 weights for 2 features") as err:
        group.monitor.observe(torch.zeros(1, 2, 2), group.spec)
    assert "\n" not in str(err.value)
