"""``steer probe``: logistic regression separates a separable set, round-trips through its
file exactly, pools kept positions only, and bad probe files are one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from support.cli_helpers import assert_one_line_error, call

from steer.errors import SteerError
from steer.features.contrast import auroc
from steer.monitoring.probe import (
    check_probe_fits,
    load_probe,
    pooled_residuals,
    save_probe,
    train_probe,
)


def separable(n: int = 200, d: int = 12, seed: int = 0):
    """Two Gaussian clouds split along one random direction by a margin, with features on
    very different scales (standardisation must cope)."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=gen)
    direction /= direction.norm()
    x = torch.randn(2 * n, d, generator=gen)
    side = (x @ direction).sign()
    x += side[:, None] * direction * 1.0  # a margin of 2 between the classes
    x *= torch.logspace(-2, 2, d)  # scales from 0.01 to 100
    return x[side > 0], x[side < 0]


def test_probe_separates_a_linearly_separable_set():
    pos, neg = separable()
    probe = train_probe(pos[:150], neg[:150], l2=1e-4)
    test_pos, test_neg = pos[150:], neg[150:]
    assert float(auroc(probe.logits(test_pos)[:, None], probe.logits(test_neg)[:, None])) > 0.99
    accuracy = (
        (probe.logits(test_pos) > 0).float().mean() + (probe.logits(test_neg) <= 0).float().mean()
    ) / 2
    assert accuracy > 0.97


def test_probe_on_noise_is_near_chance():
    gen = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(300, 8, generator=gen), torch.randn(300, 8, generator=gen)
    probe = train_probe(pos[:200], neg[:200], l2=1e-2)
    au = float(auroc(probe.logits(pos[200:])[:, None], probe.logits(neg[200:])[:, None]))
    assert 0.35 < au < 0.65


@pytest.mark.parametrize("suffix", [".safetensors", ".json"])
def test_save_load_round_trips_exactly(tmp_path, suffix):
    pos, neg = separable(n=50)
    meta = {"model": "m", "layer": 3, "pooling": "mean", "train_files": {"pos": {"sha256": "ab"}}}
    probe = train_probe(pos, neg, meta=meta)
    path = save_probe(probe, tmp_path / f"p{suffix}")
    back = load_probe(path)
    for name in ("weight", "bias", "mean", "std"):
        assert torch.equal(getattr(back, name), getattr(probe, name)), name
    assert back.meta == meta
    assert torch.equal(back.logits(pos), probe.logits(pos))
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left behind


def test_pooling_reads_kept_positions_only(tiny_model):
    text = "The cat sat on the mat."
    ids = torch.tensor([tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        h = tiny_model.hf(ids, output_hidden_states=True).hidden_states[3][0]
    pooled = pooled_residuals(tiny_model, 2, [text, ""], progress=False)
    assert torch.allclose(pooled["mean"][0], h[1:].mean(dim=0), atol=1e-4)  # no position 0
    assert torch.allclose(pooled["max"][0], h[1:].max(dim=0).values, atol=1e-4)
    assert (pooled["mean"][1] == 0).all()
    with pytest.raises(SteerError, match="out of range"):
        pooled_residuals(tiny_model, 99, [text], progress=False)


def test_check_probe_fits(tmp_path):
    pos, neg = separable(n=20, d=4)
    probe = train_probe(pos, neg, meta={"model": "m", "layer": 3})
    assert check_probe_fits(probe, model_name="m", layer=3, d_model=4, where="p") == 3
    with pytest.raises(SteerError, match="layer 3, not 4"):
        check_probe_fits(probe, layer=4, where="p")
    with pytest.raises(SteerError, match="model 'm', not 'other'"):
        check_probe_fits(probe, model_name="other", where="p")
    with pytest.raises(SteerError, match="reads 4 dimensions"):
        check_probe_fits(probe, d_model=8, where="p")


@pytest.fixture
def texts(tmp_path):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("a cat\nthe cat sat\nmy cat\n")
    neg.write_text("a dog\nthe dog ran\nmy dog\n")
    return pos, neg


@pytest.fixture
def use_tiny(monkeypatch, tiny_model):
    import steer.model

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)


@pytest.fixture
def no_model(monkeypatch):
    import steer.model

    def fail(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(steer.model, "load_model", fail)


def test_train_then_eval_commands(tmp_path, texts, capsys, use_tiny):
    pos, neg = texts
    out = tmp_path / "probe.json"
    argv = ["probe", "train", "--pos", str(pos), "--neg", str(neg), "--layer", "2"]
    code, stdout, _ = call([*argv, "--out", str(out), "--model", "tiny-llama", "--json"], capsys)
    assert code in (0, None)
    meta = json.loads(stdout)
    assert meta["layer"] == 2 and meta["n_pos"] == 3 and meta["pooling"] == "mean"
    assert len(meta["train_files"]["pos"]["sha256"]) == 64
    code, stdout, _ = call(
        ["probe", "eval", str(out), "--pos", str(pos), "--neg", str(neg), "--json"], capsys
    )
    assert code in (0, None)
    result = json.loads(stdout)
    assert result["n_pos"] == 3 and result["n_neg"] == 3 and 0 <= result["auroc"] <= 1
    # Trained and evaluated on the same six texts with six times more dimensions: separable.
    assert result["auroc"] == 1.0


def test_eval_refuses_corrupt_or_mismatched_probes(tmp_path, texts, capsys, no_model):
    pos, neg = texts
    argv = ["--pos", str(pos), "--neg", str(neg)]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file")
    code, _, err = call(["probe", "eval", str(bad), *argv], capsys)
    assert_one_line_error(code, err, "bad.safetensors", "not a readable probe file")
    notjson = tmp_path / "bad.json"
    notjson.write_text("{truncated")
    code, _, err = call(["probe", "eval", str(notjson), *argv], capsys)
    assert_one_line_error(code, err, "bad.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "meta": {}}))
    code, _, err = call(["probe", "eval", str(other), *argv], capsys)
    assert_one_line_error(code, err, "not a steer probe file")
    p, n = separable(n=20, d=4)
    good = save_probe(
        train_probe(p, n, meta={"model": "m", "layer": 3, "pooling": "mean"}),
        tmp_path / "good.safetensors",
    )
    code, _, err = call(["probe", "eval", str(good), *argv, "--layer", "12"], capsys)
    assert_one_line_error(code, err, "trained on layer 3, not 12")
    code, _, err = call(["probe", "eval", str(good), *argv, "--model", "x"], capsys)
    assert_one_line_error(code, err, "trained on model 'm', not 'x'")
    code, _, err = call(["probe", "eval", str(tmp_path / "missing.json"), *argv], capsys)
    assert_one_line_error(code, err, "probe file not found")


def test_train_refuses_bad_input_before_loading(tmp_path, texts, capsys, no_model):
    pos, neg = texts
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    base = ["probe", "train", "--pos", str(pos), "--out", str(tmp_path / "p.json")]
    code, _, err = call([*base, "--neg", str(empty)], capsys)
    assert_one_line_error(code, err, "empty.txt", "empty")
    code, _, err = call([*base, "--neg", str(neg), "--pooling", "median"], capsys)
    assert_one_line_error(code, err, "--pooling")
    code, _, err = call(
        ["probe", "train", "--pos", str(pos), "--neg", str(neg), "--out", "p.pt"], capsys
    )
    assert_one_line_error(code, err, ".safetensors or .json")
