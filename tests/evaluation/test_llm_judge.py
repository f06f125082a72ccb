"""The ``llm`` judge through the llm library's own plugin API: a model plugin registered on
``llm.plugins.pm`` (as an installed llm plugin is) that rates by fixed rules, so the judge's
prompts, parsing and harmonic mean have known answers. No mock inside steer."""

from __future__ import annotations

import pytest

llm = pytest.importorskip("llm")

from steer.errors import SteerError  # noqa: E402
from steer.evaluation.judges import JudgeContext, build_judge  # noqa: E402


class FixedRater(llm.Model):
    """Concept 2 when the rated text mentions the sea (else 0), instruction 1, fluency 2; a
    text holding "mumble" gets a reply with no rating."""

    model_id = "fixed-rater"
    can_stream = False

    def execute(self, prompt, stream, response, conversation):
        text = prompt.prompt
        rated = text.split("Text: ")[-1].split("Response: ")[-1]
        if "mumble" in rated:
            yield "I cannot say."
        elif "talk about" in text:
            yield "Explanation... Rating: [[2]]" if "sea" in rated.split("\n\n")[0] else "[[0]]"
        elif "answer the request" in text:
            yield "It answers partly. Rating: [[1]]"
        else:
            yield "the rating is 2"


class Keyed(llm.Model):
    model_id = "keyed-model"
    needs_key = "keyed"
    key_env_var = "KEYED_API_KEY"

    def execute(self, prompt, stream, response, conversation):
        yield "[[2]]"


class RaterPlugin:
    @llm.hookimpl
    def register_models(self, register):
        register(FixedRater())
        register(Keyed())


@pytest.fixture
def rater(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))  # no keys of the user's
    monkeypatch.delenv("KEYED_API_KEY", raising=False)
    plugin = RaterPlugin()
    llm.plugins.pm.register(plugin, name="fixed-rater-plugin")
    yield
    llm.plugins.pm.unregister(plugin)


CTX = JudgeContext(concept="sea", topic="the sea", keywords=["sea"])


def test_llm_judge_combines_three_ratings_by_harmonic_mean(pm, rater, caplog):
    judge = build_judge(pm, "llm:fixed-rater", CTX)
    assert judge.scale == 2.0
    texts = ["We sailed on the sea.", "We went to town.", "mumble"]
    scores = judge(["Tell me about your weekend."] * 3, texts)
    # sea: concept 2, instruction 1, fluency 2 -> 3 / (1/2 + 1 + 1/2) = 1.5; town: concept 0
    assert scores == [pytest.approx(1.5), 0.0, 0.0]
    assert "3 of 9 ratings could not be read" in caplog.text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("llm:no-such-model", "llm model 'no-such-model' is not configured"),
        ("llm:keyed-model", "needs a key: `llm keys set keyed` or $KEYED_API_KEY"),
    ],
)
def test_an_unconfigured_judge_model_is_one_line(pm, rater, spec, message):
    with pytest.raises(SteerError, match=message.replace("$", r"\$")):
        build_judge(pm, spec, CTX)


def test_a_key_in_the_environment_configures_the_model(pm, rater, monkeypatch):
    monkeypatch.setenv("KEYED_API_KEY", "k")
    assert build_judge(pm, "llm:keyed-model", CTX)(["p"], ["the sea"]) == [2.0]


def test_unconfigured_judge_on_the_command_line_exits_2(rater, capsys):
    from support.cli_helpers import assert_one_line_error, call

    code, _, err = call(
        ["eval", "recipes/steer-sea.yaml", "--concept", "sea", "--judge", "llm:nope"], capsys
    )
    assert_one_line_error(code, err, "llm model 'nope' is not configured")


class Quota(llm.Model):
    """Rates 2 until its quota of replies is spent, then fails as an API over quota does."""

    model_id = "quota-model"
    can_stream = False
    left = 0

    def execute(self, prompt, stream, response, conversation):
        if Quota.left <= 0:
            raise RuntimeError("429 Too Many Requests: quota exceeded")
        Quota.left -= 1
        yield "Rating: [[2]]"


class QuotaPlugin:
    @llm.hookimpl
    def register_models(self, register):
        register(Quota())


def test_an_llm_judge_failing_midway_leaves_a_resumable_result(
    pm, rater, tiny_steerer, small_settings, tmp_path
):
    import json

    from steer.evaluation.run import Evaluation

    plugin = QuotaPlugin()
    llm.plugins.pm.register(plugin, name="quota-plugin")
    try:
        n = len(small_settings.prompts)
        Quota.left = 3 * n * 3  # three arms' worth of ratings
        small_settings.judges = ["lexicon", "llm:quota-model"]
        out = tmp_path / "out"
        evaluation = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm)
        with pytest.raises(SteerError, match=r"quota exceeded.*rerun the same command to resume"):
            evaluation.run()
        done = json.loads((out / "arms" / "recipe@0.5.json").read_text())
        assert done["scores"]["llm:quota-model"] == [[2.0] * n]
        Quota.left = 10**6
        records = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm).run()
        assert all(r["scores"]["llm:quota-model"] == [[2.0] * n] for r in records.values())
    finally:
        llm.plugins.pm.unregister(plugin)
