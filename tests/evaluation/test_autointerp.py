"""Auto-interp on a small feature index of the tiny model, with explainer and scorer models
registered through the llm library's plugin manager: explanations stored as ``source: auto``
labels, and detection/fuzzing scores with known answers."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from support.cli_helpers import assert_one_line_error, call
from support.feature_index import build_small_index

llm = pytest.importorskip("llm")

from steer.evaluation.autointerp import (  # noqa: E402
    active,
    balanced_accuracy,
    context_text,
    firing,
    read_yes,
    score,
)
from steer.features.store import FeatureIndex  # noqa: E402
from steer.sae.labels import Label, load_labels, save_labels  # noqa: E402


class Scripted(llm.Model):
    """Replies by rule: explanations are "cats on mats"; ``always-yes`` says yes to every
    question, ``oracle`` says yes exactly to the texts in ``Scripted.truth``."""

    can_stream = False
    truth: ClassVar[set[str]] = set()

    def __init__(self, model_id):
        self.model_id = model_id

    def execute(self, prompt, stream, response, conversation):
        text = prompt.prompt
        if "what do the marked tokens have in common" in text:
            yield "Cats on mats\nmore words"
        elif self.model_id == "always-yes":
            yield "Yes."
        elif self.model_id == "mute":
            yield "hmm"
        else:
            shown = text.split("Text: ")[1].split("\n\n")[0]
            yield "yes" if shown in Scripted.truth else "no"


class Plugin:
    @llm.hookimpl
    def register_models(self, register):
        for name in ("always-yes", "oracle", "mute"):
            register(Scripted(name))


@pytest.fixture
def models(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    plugin = Plugin()
    llm.plugins.pm.register(plugin, name="scripted-models")
    yield
    llm.plugins.pm.unregister(plugin)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_model):
    folder, *_ = build_small_index(tmp_path_factory.mktemp("idx"), tiny_model)
    with FeatureIndex.open(folder) as index:
        fid = next(f for f in range(index.d_sae) if index.has(f) and index.feature(f).contexts)
    return folder, fid


def ask_with(model_id):
    model = llm.get_model(model_id)
    return lambda p: model.prompt(p, stream=False).text()


def test_pieces():
    assert read_yes("Yes, it does") is True and read_yes("no.") is False
    assert read_yes("maybe") is None
    assert balanced_accuracy([True, True, False, False], [True, None, False, True]) == 0.5
    assert balanced_accuracy([True, False], [True, False]) == 1.0


def test_scores_have_known_answers(small_index, models):
    folder, fid = small_index
    with FeatureIndex.open(folder) as index:
        yes = score(index, fid, "cats", ask_with("always-yes"), n=4)
        assert (yes.detection, yes.fuzzing, yes.unreadable) == (0.5, 0.5, 0)
        # the oracle knows where the feature is active: every marked text right
        Scripted.truth = {context_text(c, active(c)) for c in firing(index, fid)}
        oracle = score(index, fid, "cats", ask_with("oracle"), n=4)
        assert oracle.fuzzing == 1.0 and oracle.n_fuzzing == 2 * min(4, len(firing(index, fid)))
        mute = score(index, fid, "cats", ask_with("mute"), n=4)
        assert mute.unreadable == mute.n_detection + mute.n_fuzzing


def test_explain_stores_an_auto_label_and_keeps_a_persons(small_index, models, capsys):
    folder, fid = small_index
    argv = ["features", "explain", str(folder), str(fid), "--explainer", "oracle",
            "--scorer", "always-yes", "--examples", "3", "--json"]  # fmt: skip
    code, out, err = call(argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["explanation"] == "Cats on mats" and result["label"] == "cats-on-mats"
    assert result["scores"]["detection"] == 0.5
    label = load_labels(folder)[fid]
    assert label.source == "auto" and label.name == "cats-on-mats"
    assert "explained by oracle" in label.description and "by always-yes" in label.description
    code, out, _ = call(["features", "score", str(folder), "cats-on-mats", "--scorer",
                         "always-yes", "--examples", "2", "--json"], capsys)  # fmt: skip
    assert code == 0 and json.loads(out)["explanation"] == "Cats on mats"
    save_labels(folder, {fid: Label("mine", "a person's", "manual")})
    code, out, err = call(argv, capsys)
    assert code == 0 and "kept" in err and load_labels(folder)[fid].name == "mine"


def test_bad_models_are_one_line(small_index, models, capsys):
    folder, fid = small_index
    code, _, err = call(
        ["features", "explain", str(folder), str(fid), "--explainer", "nope"], capsys
    )
    assert_one_line_error(code, err, "llm model 'nope' is not configured")
    code, _, err = call(["features", "score", str(folder), str(fid), "--explanation", " "], capsys)
    assert_one_line_error(code, err, "--explanation is empty")
