"""Cross-distribution evaluation on small fixed inputs: the sparse probe finds a planted
signal, the AUROCs and CIs are the hand-computed ones, bad sets are one line."""

from __future__ import annotations

import json

import pytest
import torch

from steer.errors import SteerError
from steer.monitoring.detectors import fit_detector
from steer.monitoring.labelled import EncodedSet, join_sites, read_labelled
from steer.monitoring.sparse import token_weights, train_sparse_probe
from steer.monitoring.transfer import bootstrap_auroc, cross_evaluate, split_set, table


def encoded(rows: list[list[float]], labels: list[int]) -> EncodedSet:
    """A set whose every text has one kept token carrying ``rows[i]`` as its SAE
    activations (so pooled and per-token scores agree) and a 2-wide residual."""
    x = torch.tensor(rows, dtype=torch.float32)
    t, f = torch.nonzero(x, as_tuple=True)
    return EncodedSet(
        labels=torch.tensor(labels, dtype=torch.bool),
        sae_max=x,
        resid_mean=torch.stack([x[:, 0], torch.zeros(len(rows))], dim=1),
        tok_ptr=torch.arange(len(rows) + 1),
        tok_row=t,
        tok_idx=f,
        tok_val=x[t, f],
    )


def test_the_sparse_probe_recovers_a_planted_sparse_signal():
    gen = torch.Generator().manual_seed(0)
    n, d, planted = 400, 300, [7, 42, 199]
    x = torch.rand(n, d, generator=gen) * (torch.rand(n, d, generator=gen) < 0.3)
    logit = 6 * x[:, planted].sum(dim=1) - 6 * x[:, planted].sum(dim=1).mean()
    y = torch.rand(n, generator=gen) < torch.sigmoid(logit)
    probe = train_sparse_probe(x[y], x[~y], l1=0.06)
    found = set(torch.nonzero(probe.weight).flatten().tolist())
    assert found == set(planted) and probe.meta["n_features"] == 3
    assert (probe.weight[planted] > 0).all()
    # Folded into raw per-token weights, the probe scores a row exactly as before.
    w, b = token_weights(probe)
    assert torch.allclose(x @ w + b, probe.logits(x), atol=1e-4)


def test_more_l1_keeps_fewer_features():
    gen = torch.Generator().manual_seed(1)
    pos, neg = torch.rand(50, 40, generator=gen) + 0.1, torch.rand(50, 40, generator=gen)
    counts = [train_sparse_probe(pos, neg, l1=l1).meta["n_features"] for l1 in (0.001, 0.05)]
    assert counts[0] > counts[1] >= 0


# Set A: feature 0 separates perfectly, feature 1 points the other way. Set B: feature 0
# scores positives 3, 1, 0.5 and negatives 2, 0, 0: of the 9 pairs 7 are ordered right, so
# the group {0} fitted on A has AUROC 7/9 on B; fitted on B (feature 1 is 0 there, so the
# group stays {0}) it has AUROC 1 on A.
A = encoded([[5, 0], [6, 0], [0, 1], [0, 2]], [1, 1, 0, 0])
B = encoded([[3, 0], [1, 0], [0.5, 0], [2, 0], [0, 0], [0, 0]], [1, 1, 1, 0, 0, 0])


def test_group_fitted_on_one_set_and_judged_on_the_other_gives_the_hand_computed_auroc():
    rows = cross_evaluate({"a": A, "b": B}, kinds=["group"], n_boot=0, within=False)
    by_test = {r.test: r for r in rows}
    assert by_test["b"].fit == ["a"] and by_test["b"].auroc == pytest.approx(7 / 9)
    assert by_test["a"].fit == ["b"] and by_test["a"].auroc == pytest.approx(1.0)
    assert by_test["b"].ci == (pytest.approx(7 / 9), pytest.approx(7 / 9))
    # The threshold carried over from A is the 95 % quantile of A's negative scores (0, 0):
    # 0, so on B it fires on all 3 positives and on the negative scoring 2.
    t = by_test["b"].transferred
    assert (t["threshold"], t["tpr"], t["fpr"]) == (0.0, 1.0, pytest.approx(1 / 3, abs=1e-4))
    assert "| b | 0.778 [0.78, 0.78] |" in table(rows)


def test_per_token_scoring_matches_pooled_scoring_on_one_token_texts():
    det = fit_detector("sparse-token", [A, B], l1=0.001)
    pooled = fit_detector("sparse", [A, B], l1=0.001)
    assert torch.allclose(det.score(B), pooled.score(B), atol=1e-4)


def test_bootstrap_ci_brackets_the_auroc_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(60, generator=gen) + 1, torch.randn(60, generator=gen)
    lo, hi = bootstrap_auroc(pos, neg, n_boot=500, seed=3)
    from steer.monitoring.thresholds import score_auroc

    assert lo < score_auroc(pos, neg) < hi
    assert (lo, hi) == bootstrap_auroc(pos, neg, n_boot=500, seed=3)


def test_within_rows_read_the_same_test_half_as_held_out_rows():
    big = encoded(
        [[float(i % 5 + 1 if i < 8 else i % 3), 1.0] for i in range(16)], [1] * 8 + [0] * 8
    )
    rows = cross_evaluate({"a": big, "b": big}, kinds=["group", "dense"], n_boot=10)
    assert {(r.kind, r.mode) for r in rows} == {
        (k, m) for k in ("group", "dense") for m in ("within", "held-out")
    }
    assert all((r.n_pos, r.n_neg) == (4, 4) for r in rows)


def test_a_set_too_small_for_its_split_is_one_line():
    with pytest.raises(SteerError, match=r"^small: has 3 positive texts; at least 4"):
        split_set(encoded([[1, 0]] * 3 + [[0, 0]] * 4, [1, 1, 1, 0, 0, 0, 0]), "small")


def test_one_set_is_not_cross_distribution():
    with pytest.raises(SteerError, match="at least two labelled sets"):
        cross_evaluate({"a": A}, n_boot=0)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reading_a_labelled_set(tmp_path):
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [{"text": "a", "label": 1}, {"text": "b", "label": True}, {"text": "c", "label": 0},
         {"text": "d", "label": False}],
    )  # fmt: skip
    got = read_labelled(path)
    assert (got.name, got.labels, got.n_pos, got.n_neg) == ("s", [1, 1, 0, 0], 2, 2)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "a", "label": 1}, {"text": "b", "label": 1}], "has no negative texts"),
        ([{"text": "a", "label": 0}] * 3, "has no positive texts"),
        ([{"text": "a", "label": "hate"}], ":1: label must be 0, 1, true or false"),
        ([{"label": 1}], ':1: each record needs a "text" string'),
        ([{"text": "a"}], ':1: each record needs a "label"'),
        ([{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": 0}],
         "has 1 positive text; at least 2"),
    ],
)  # fmt: skip
def test_a_bad_labelled_set_is_one_line(tmp_path, records, message):
    path = write_jsonl(tmp_path / "s.jsonl", records)
    with pytest.raises(SteerError, match=message) as err:
        read_labelled(path)
    assert "\n" not in str(err.value)


def test_a_subset_keeps_each_texts_tokens():
    # Text 0 has two kept tokens, text 1 none, text 2 one.
    enc = EncodedSet(
        labels=torch.tensor([True, False, True]),
        sae_max=torch.tensor([[2.0, 3.0], [0.0, 0.0], [0.0, 5.0]]),
        resid_mean=torch.zeros(3, 2),
        tok_ptr=torch.tensor([0, 2, 2, 3]),
        tok_row=torch.tensor([0, 1, 1, 2]),
        tok_idx=torch.tensor([0, 0, 1, 1]),
        tok_val=torch.tensor([2.0, 1.0, 3.0, 5.0]),
    )
    w = torch.tensor([1.0, -1.0])
    assert enc.token_scores(w, 0.5).tolist() == [2.5, 0.5, -4.5]
    sub = enc.subset(torch.tensor([True, False, True]))
    assert sub.tok_ptr.tolist() == [0, 2, 3] and sub.tok_row.tolist() == [0, 1, 1, 2]
    assert sub.token_scores(w, 0.5).tolist() == [2.5, -4.5]
    assert enc.subset(torch.tensor([False, False, True])).token_scores(w).tolist() == [-5.0]


def test_joined_sites_read_every_sites_features_side_by_side():
    # Two "layers" over the same 4 texts: the signal is in feature 1 of the second site only.
    labels = [1, 1, 0, 0]
    first = encoded([[1, 0, 2], [0, 1, 2], [1, 0, 2], [0, 1, 2]], labels)
    second = encoded([[0, 5], [0, 6], [1, 1], [2, 0]], labels)
    joint = join_sites([first, second])
    assert joint.sae_max.shape == (4, 5) and joint.resid_mean.shape == (4, 4)
    assert torch.equal(joint.sae_max[:, 3:], second.sae_max)
    assert torch.equal(joint.resid_mean[:, :2], first.resid_mean)
    assert int(joint.tok_ptr[-1]) == 0 and len(joint.tok_row) == 0  # no common tokens
    # A group fitted on the joint set finds the second site's feature, at its offset.
    group = fit_detector("group", [joint])
    assert group.features == [3 + 1]
    scores = group.score(joint)
    assert scores[:2].min() > scores[2:].max()
    # Subsets keep working on the empty token tables (the cross-evaluation splits them).
    half = joint.subset(torch.tensor([True, False, True, False]))
    assert half.sae_max.shape == (2, 5) and half.tok_ptr.tolist() == [0, 0, 0]


def test_joining_encodings_of_other_texts_is_one_line():
    a = encoded([[1.0], [0.0]], [1, 0])
    b = encoded([[1.0], [0.0], [0.0]], [1, 0, 0])
    with pytest.raises(SteerError, match="encoded set 1 holds other texts than set 0"):
        join_sites([a, b])
    with pytest.raises(SteerError, match="at least one encoded set"):
        join_sites([])
