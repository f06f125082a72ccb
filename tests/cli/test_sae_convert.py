"""`steer sae convert` and `steer sae list --release`: any readable SAE becomes a SAELens folder
that steer and SAELens read with the same numbers; what cannot be read is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.cli_helpers import assert_one_line_error, call
from support.pickled import Stowaway
from support.sae_files import write_npz

from steer.sae import load_sae

D_IN, D_SAE = 16, 64


def _gemmascope(folder):
    """A GemmaScope 1 ``params.npz`` in a folder named as in google/gemma-scope-2b-pt-res."""
    write_npz(folder / "params.npz")
    return folder


def test_convert_gemmascope_to_saelens(tmp_path, capsys):
    source = _gemmascope(
        tmp_path / "gemma-scope-2b-pt-res" / "layer_20" / "width_16k" / "average_l0_71"
    )
    out = tmp_path / "converted"
    code, stdout, err = call(["sae", "convert", str(source), str(out)], capsys)
    assert code == 0, err
    assert "jumprelu d_in=16 d_sae=64 hook=blocks.20.hook_resid_post" in stdout
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["model_name"] == "gemma-2-2b"
    original, copy = load_sae(source), load_sae(out)
    x = torch.randn(9, D_IN)
    assert torch.equal(original.encode(x), copy.encode(x))
    assert torch.equal(original(x), copy(x))
    sae_lens = pytest.importorskip("sae_lens")
    lens = sae_lens.SAE.load_from_disk(out)
    with torch.no_grad():
        assert torch.equal(lens.encode(x), copy.encode(x))


def test_convert_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    source = _gemmascope(tmp_path / "src")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    code, _, err = call(["sae", "convert", str(source), str(tmp_path / "mine")], capsys)
    assert_one_line_error(code, err, "is not empty; give a new folder (nothing is replaced)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"


def test_list_a_release(capsys):
    code, stdout, err = call(["sae", "list", "--release", "gpt2-small-res-jb"], capsys)
    assert code == 0, err
    assert (
        "blocks.8.hook_resid_pre\tjbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre"
        in stdout
    )
    code, stdout, _ = call(["sae", "list", "--release", "all"], capsys)
    assert "mistral-7b-res-wg\tmistral-7b\tsae_lens (reads)" in stdout


def test_a_pickle_only_file_is_refused_and_the_hinted_command_fixes_it(tmp_path, capsys):
    import subprocess
    import sys

    folder = tmp_path / "trainer_0"
    folder.mkdir()
    config = {
        "trainer": {"dict_class": "AutoEncoder", "activation_dim": D_IN, "dict_size": D_SAE,
                    "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped"},
        "buffer": {"ctx_len": 128},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=gen),
        "encoder.bias": torch.randn(D_SAE, generator=gen),
        "decoder.weight": torch.randn(D_IN, D_SAE, generator=gen),
        "bias": torch.randn(D_IN, generator=gen),
    }
    torch.save({**tensors, "stowaway": Stowaway()}, folder / "ae.pt")
    code, _, err = call(["sae", "convert", str(folder), str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "ae.pt: holds pickled Python objects", "steer never unpickles")
    assert not (tmp_path / "out").exists()
    # The command the message gives, run as a user would (who trusts the file's source).
    command = err.split('python -c "', 1)[1].rsplit('" and give that file', 1)[0]
    tests = str(Path(__file__).resolve().parents[1])  # where support.pickled is importable
    preamble = f"import sys; sys.path.insert(0, {tests!r})\n"
    done = subprocess.run(
        [sys.executable, "-c", preamble + command], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-500:]
    code, _, err = call(["sae", "convert", str(folder), str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert torch.equal(load_sae(tmp_path / "out").W_enc, tensors["encoder.weight"].T)
