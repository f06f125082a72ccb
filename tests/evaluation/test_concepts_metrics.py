"""Concepts and their texts; the fluency and capability measures on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from steer.errors import SteerError
from steer.evaluation.arms import vector_edit
from steer.evaluation.concepts import load_concept, mentions, shipped_concepts
from steer.evaluation.metrics import (
    ArmEdit,
    kl_per_window,
    mc_correct,
    neutral_windows,
    prompt_losses,
    read_mc,
)
from steer.model.sites import Hook


def test_shipped_concepts_have_texts_that_use_their_words():
    assert {"sea", "food", "romance"} <= set(shipped_concepts())
    sea = load_concept("sea")
    assert sea.topic == "the sea" and len(sea.positive) >= 20
    assert all(mentions(t, sea.keywords) for t in sea.positive)
    assert not any(mentions(t, sea.keywords) for t in sea.negative)
    assert len(sea.negative) == len(sea.positive)


def test_bad_concepts_are_one_line():
    with pytest.raises(SteerError, match=r"unknown concept 'tea' .*give --keywords"):
        load_concept("tea")
    with pytest.raises(SteerError, match="no positive texts"):
        load_concept("zz", keywords=["xqzvbnm"])
    with pytest.raises(SteerError, match="no positive texts"):
        load_concept("sea", positive=[], negative=["a"])
    with pytest.raises(SteerError, match="no negative texts"):
        load_concept("sea", negative=[])
    own = load_concept("tea", keywords=["tea"], positive=["tea time"], negative=["no"])
    assert (own.topic, own.positive) == ("tea", ["tea time"])


def test_read_mc_checks_each_record(tmp_path):
    assert len(read_mc()) == 32
    assert sorted({q["answer"] for q in read_mc()}) == [0, 1, 2, 3]
    bad = tmp_path / "mc.jsonl"
    for line, message in [
        ("not json", "not a JSON object"),
        (json.dumps({"question": "q", "choices": ["a"], "answer": 0}), "2\\+ texts"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), "answer"),
        (json.dumps({"choices": ["a", "b"], "answer": 0}), "question"),
    ]:
        bad.write_text(line + "\n")
        with pytest.raises(SteerError, match=message):
            read_mc(bad)


def test_losses_kl_and_mc_on_the_tiny_model(tiny_model):
    losses = prompt_losses(tiny_model, ["The cat", "Paris"], ["sat on the mat", ""], chat=False)
    assert losses[0] > 0 and losses[1] is None
    windows = neutral_windows(tiny_model, n=2, length=16)
    assert windows.shape == (2, 16)
    assert kl_per_window(tiny_model, windows, ArmEdit()) == pytest.approx([0.0, 0.0], abs=1e-6)
    vec = torch.ones(tiny_model.d_model)
    hook = Hook.at("resid_post", 1)
    pushed = kl_per_window(tiny_model, windows, ArmEdit(edit=vector_edit(vec, 20.0), hook=hook))
    assert all(kl > 1e-3 for kl in pushed)
    assert all(kl > 1e-3 for kl in kl_per_window(tiny_model, windows, ArmEdit(prefix="Paris ")))
    questions = read_mc()[:3]
    correct = mc_correct(tiny_model, questions, ArmEdit())
    assert set(correct) <= {0.0, 1.0} and len(correct) == 3


def test_mc_picks_the_choice_with_the_highest_summed_log_likelihood(tiny_model):
    tok = tiny_model.tokenizer
    question = {"question": "Where is Paris?", "choices": ["in France", "the cat sat", "1 2 3"]}
    context = tok("Question: Where is Paris?\nAnswer:", add_special_tokens=False)["input_ids"]
    sums = []
    for choice in question["choices"]:
        ids = context + tok(" " + choice, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = tiny_model.hf(input_ids=torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        sums.append(sum(float(lp[i - 1, ids[i]]) for i in range(len(context), len(ids))))
    best = max(range(3), key=sums.__getitem__)
    for answer in range(3):
        got = mc_correct(tiny_model, [question | {"answer": answer}], ArmEdit())
        assert got == [1.0 if answer == best else 0.0]
