"""`steer train` and `steer sae eval` from the command line (tiny model stands in)."""

from __future__ import annotations

import json
import random

import pytest
from support.cli_helpers import assert_one_line_error, call

from steer.sae import load_sae

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "in",
    "a",
    "park",
    "mat",
    "sun",
    "little",
    "girl",
    "played",
    "Paris",
    "capital",
    "France",
]


@pytest.fixture
def plain_text(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "plain.txt"
    paras = [" ".join(rng.choice(WORDS) for _ in range(60)) + "." for _ in range(80)]
    path.write_text("\n\n".join(paras))
    return path


def test_train_then_eval_from_the_cli(tiny_everywhere, plain_text, tmp_path, capsys):
    out = tmp_path / "my-sae"
    args = ["train", "--data", str(plain_text), "--out", str(out), "--layer", "2", "--d-sae", "64"]
    args += ["--k", "4", "--collect-tokens", "4096", "--train-tokens", "8192"]
    code, stdout, _ = call(args, capsys)
    assert code == 0
    assert f"saved {out}" in stdout
    sae = load_sae(out)
    assert (sae.cfg.architecture, sae.cfg.d_sae, sae.cfg.k, sae.cfg.layer) == ("topk", 64, 4, 2)

    code, stdout, _ = call(
        [
            "sae",
            "eval",
            str(out),
            "--data",
            str(plain_text),
            "--max-tokens",
            "1024",
            "--ce-tokens",
            "512",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    metrics = json.loads(stdout)
    assert 0.0 < metrics["explained_variance"] <= 1.0
    assert metrics["l0"] <= 4


def test_train_with_a_missing_data_file(tiny_everywhere, tmp_path, capsys):
    code, _, err = call(
        [
            "train",
            "--data",
            str(tmp_path / "none.txt"),
            "--out",
            str(tmp_path / "o"),
            "--layer",
            "2",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "none.txt")


def test_train_with_a_layer_out_of_range(tiny_everywhere, plain_text, tmp_path, capsys):
    code, _, err = call(
        ["train", "--data", str(plain_text), "--out", str(tmp_path / "o"), "--layer", "9"], capsys
    )
    assert_one_line_error(code, err, "layer 9 out of range")


def test_eval_of_a_missing_sae(tmp_path, plain_text, capsys):
    code, _, err = call(["sae", "eval", str(tmp_path / "nope"), "--data", str(plain_text)], capsys)
    assert_one_line_error(code, err, "nope")


def test_train_never_replaces_a_folder_it_did_not_write(
    tiny_everywhere, plain_text, tmp_path, capsys
):
    out = tmp_path / "my-results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["train", "--data", str(plain_text), "--out", str(out), "--layer", "2", "--d-sae", "64"]
    args += [
        "--k",
        "4",
        "--collect-tokens",
        "4096",
        "--train-tokens",
        "8192",
        "--batch-size",
        "256",
    ]
    code, _, err = call(args, capsys)
    assert_one_line_error(code, err, str(out), "holds no SAE")
    assert (out / "notes.txt").read_text() == "mine"
    sae = tmp_path / "sae"
    code, _, err = call([*args[:3], "--out", str(sae), *args[5:]], capsys)
    assert code == 0, err
    (sae / "notes.txt").write_text("beside my SAE")
    code, _, err = call([*args[:3], "--out", str(sae), *args[5:], "--seed", "1"], capsys)
    assert code == 0, err  # an SAE is replaced; the other files beside it are kept
    assert (sae / "notes.txt").read_text() == "beside my SAE" and load_sae(sae).cfg.d_sae == 64
