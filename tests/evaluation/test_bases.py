"""The bases comparison on the tiny model: every basis gets the same number of directions,
its contexts ranked the same way, and the offline lexical scorer has known answers."""

from __future__ import annotations

import random

import pytest
import torch
from support.sae_factory import make_sae

from steer.evaluation.bases import (
    BASES,
    compare_bases,
    contexts_of,
    kept_positions,
    lexical_score,
    linear_bases,
    oriented,
)
from steer.features.store import Context
from steer.model.sites import Hook

pytest.importorskip("sklearn")


def test_oriented_rows_are_unit_and_point_to_the_longer_tail():
    x = torch.tensor([[10.0, 0.0], [-1.0, 0.0], [0.0, -9.0], [0.0, 1.0]])
    d = oriented(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), x)
    assert torch.allclose(d, torch.tensor([[1.0, 0.0], [0.0, -1.0]]))


def test_linear_bases_have_k_unit_directions_each():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 9)
    found = linear_bases(x, 3, seed=0)
    assert set(found) == {"neurons", "random", "pca", "ica"}
    for dirs in found.values():
        assert dirs.shape == (3, 8)
        assert torch.allclose(dirs.norm(dim=1), torch.ones(3), atol=1e-5)
    # the first principal component is the highest-variance coordinate
    assert found["pca"][0].abs().argmax() == 7


def test_contexts_rank_windows_by_their_peak():
    acts = torch.zeros(8, 5)
    for w in range(8):
        acts[w, 2] = float(w)  # window 7 peaks highest
    acts[:, 0] = -1.0  # left-out positions come at the minimum
    tokens = [[f"t{w}{i}" for i in range(5)] for w in range(8)]
    explaining, firing, quiet = contexts_of(acts, tokens, 2, random.Random(0))
    assert [c.act for c in explaining] == [7.0, 5.0] and [c.act for c in firing] == [6.0, 4.0]
    assert all(c.act <= 3.0 for c in quiet) and len(quiet) == 2
    # active where the activation reaches half the 4th window's peak (4 / 2 = 2)
    assert explaining[0].acts == [0.0, 0.0, 7.0, 0.0, 0.0]


def test_position_zero_and_norm_outliers_are_left_out():
    h = torch.ones(2, 4, 3)
    h[1, 2] = 100.0  # a massive-norm token
    keep = kept_positions(h)
    assert keep.tolist() == [[False, True, True, True], [False, True, False, True]]


def ctx(tokens, on):
    return Context(
        act=1.0,
        tokens=tokens,
        acts=[1.0 if i in on else 0.0 for i in range(len(tokens))],
        focus=on[0],
    )


def test_lexical_scorer_has_known_answers():
    explaining = [ctx(["<s>", " the", " sea", " was"], [2]), ctx(["<s>", " a", " Sea", " b"], [2])]
    pos = [ctx(["<s>", " by", " sea", " x"], [2]), ctx(["<s>", " the", " sea", " y"], [2])]
    neg = [ctx(["<s>", " dry", " land", " z"], [2]), ctx(["<s>", " no", " sand", " w"], [2])]
    words, scored = lexical_score(explaining, pos, neg, random.Random(0))
    assert words == "sea"
    assert scored.detection == 1.0 and scored.fuzzing == 1.0
    words, scored = lexical_score(explaining, neg, pos, random.Random(0))
    assert scored.detection == 0.0


def test_compare_bases_on_the_tiny_model(tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=32, k=4, layer=1, seed=0)
    texts = ["The cat sat on the mat. The dog ran in the park. " * 40]
    result = compare_bases(
        tiny_model, sae, Hook.at("resid_post", 1), texts, k=3, n=2, max_tokens=1024
    )
    assert set(result["bases"]) == set(BASES) and len(result["sae_features"]) == 3
    for basis in result["bases"].values():
        assert len(basis["directions"]) == 3
        for key in ("detection", "fuzzing"):
            summary = basis["summary"][key]
            assert 0.0 <= summary["low"] <= summary["mean"] <= summary["high"] <= 1.0
