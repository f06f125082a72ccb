"""The built-in offline judges, through the registry as ``steer eval`` builds them, on fixed
texts with known answers; bad judge specs."""

from __future__ import annotations

import pytest

from steer import JudgeType, hookimpl
from steer.errors import SteerError
from steer.evaluation.judges import JudgeContext, build_judge, judge_type, parse_spec


def ctx(**kw):
    base = {"concept": "sea", "topic": "the sea", "keywords": ["sea", "ocean", "ship"]}
    return JudgeContext(**(base | kw))


def test_lexicon_counts_whole_words_in_any_case(pm):
    judge = build_judge(pm, "lexicon", ctx())
    texts = ["The SEA was calm.", "A seagull flew.", "", "ships and a ship", "nothing here"]
    assert judge(["p"] * 5, texts) == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_lexicon_with_its_own_words(pm):
    judge = build_judge(pm, "lexicon:cake, bread", ctx())
    assert judge(["p"] * 3, ["I ate bread", "the sea", "Cake!"]) == [1.0, 0.0, 1.0]


def test_probe_judge_separates_its_concept_texts(pm, tiny_model):
    pos = ["the cat sat on the mat"] * 3 + ["a cat and a cat"] * 3
    neg = ["Paris is the capital of France"] * 3 + ["numbers 1 2 3 4 5"] * 3
    c = ctx(positive=pos, negative=neg, model=tiny_model, layer=1)
    judge = build_judge(pm, "probe", c)
    scores = judge(["p"] * 4, ["the cat sat on the mat", "Paris is the capital of France", "", " "])
    assert scores[0] > 0.5 > scores[1]
    assert scores[2:] == [0.0, 0.0]  # an empty completion is not about anything


def test_probe_file_of_another_layer_is_refused(pm, tiny_model, tmp_path):
    import torch

    from steer.monitoring.probe import save_probe, train_probe

    d = tiny_model.d_model
    probe = train_probe(torch.randn(4, d) + 1, torch.randn(4, d), meta={"layer": 0})
    path = save_probe(probe, tmp_path / "p.json")
    judge = build_judge(pm, f"probe:{path}", ctx(model=tiny_model, layer=1))
    with pytest.raises(SteerError, match="reads layer 0, the recipe edits layer 1"):
        judge(["p"], ["some text"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown judge 'nope' (known: "),
        (":x", "give a judge name"),
        ("lexicon:", "nothing after the colon"),
        ("lexicon: , ", "has no words"),
    ],
)
def test_bad_judge_specs_are_one_line(pm, spec, message):
    with pytest.raises(SteerError, match=message.replace("(", r"\(")):
        build_judge(pm, spec, ctx())


def test_parse_spec():
    assert parse_spec("probe:/a:b.json") == ("probe", "/a:b.json")
    assert parse_spec(" lexicon ") == ("lexicon", None)


def test_a_plugin_judge_is_registered_and_checked(pm):
    class Plugin:
        @hookimpl
        def steer_register_judges(self, register):
            register(JudgeType("length", lambda c, a: lambda p, t: [len(x) for x in t], scale=99))
            register(JudgeType("short", lambda c, a: lambda p, t: [1.0]))

    pm.register(Plugin(), name="mine")
    assert judge_type(pm, "length").scale == 99
    assert build_judge(pm, "length", ctx())(["a", "b"], ["xy", ""]) == [2.0, 0.0]
    with pytest.raises(SteerError, match="returned 1 scores for 2 texts"):
        build_judge(pm, "short", ctx())(["a", "b"], ["x", "y"])
