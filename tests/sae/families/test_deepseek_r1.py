"""qresearch's DeepSeek R1 Distill SAE file, read as SAELens 6.54's ``deepseek_r1`` loader reads
it: the fixture (bfloat16, as SAELens's config says) is put into an offline Hugging Face cache
under the release's repo, loaded by SAELens's loader (with tiny sizes, which SAELens
hard-codes), built into its SAE the way ``SAE.from_pretrained_with_cfg_and_sparsity`` does, and
compared."""

from __future__ import annotations

import shutil

import pytest
import safetensors.torch
import torch
from support.hf_cache import populate_hf_cache
from support.pickled import Stowaway
from support.sae_files import linear_layers, load_error, save_pt
from support.saelens_peer import assert_same_sae, saelens_peer, seeded_inputs

from steer.sae import load_sae
from steer.sae.families import deepseek_r1, family_for

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
REPO = "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19"
FILE = "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"


def tensors() -> dict[str, torch.Tensor]:
    """Seeded weights of the file's two torch Linear layers, in bfloat16."""
    return linear_layers(D_IN, D_SAE, dtype=torch.bfloat16)


def write(path, weights=None):
    return save_pt(path, tensors() if weights is None else weights)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_matches_saelens(tmp_path, cache, dtype):
    src = write(tmp_path / "src" / FILE)
    snapshot = populate_hf_cache(cache, REPO, {FILE: src})
    theirs, _ = saelens_peer("deepseek_r1", REPO, FILE, dtype=dtype, d_in=D_IN, d_sae=D_SAE)
    x = seeded_inputs(D_IN)
    copy = shutil.copy(src, tmp_path / FILE)
    overrides = {"dtype": dtype} if dtype != "bfloat16" else {}
    for path in (snapshot / FILE, copy):
        ours = load_sae(path, overrides=overrides)
        cfg = ours.cfg
        assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("standard", 16, 64, dtype)
        assert (cfg.hook_name, cfg.layer) == ("blocks.19.hook_resid_post", 19)
        assert cfg.model_name == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
        assert cfg.apply_b_dec_to_input is False
        feats = assert_same_sae(ours, theirs, x)  # the same weights and formula: same bits
    assert 0.05 < (feats > 0).float().mean().item() < 0.95


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    weights = tensors()
    path = write(tmp_path / FILE, {**weights, "note": Stowaway()})
    msg = load_error(path, "steer never unpickles")
    assert "DeepSeek-R1-Distill-Llama-8B-SAE-l19.safetensors" in msg
    converted = tmp_path / "DeepSeek-R1-Distill-Llama-8B-SAE-l19.safetensors"
    safetensors.torch.save_file(weights, str(converted))
    assert family_for(converted) is deepseek_r1
    loaded = load_sae(converted)
    assert loaded.cfg.layer == 19 and loaded.W_enc.dtype == torch.bfloat16
    assert torch.equal(loaded.W_enc, weights["encoder.weight"].T)


def test_bad_files(tmp_path):
    bad = tensors()
    del bad["encoder.bias"]
    load_error(write(tmp_path / "a" / FILE, bad), "tensor 'encoder.bias' is missing")
    bad = tensors()
    bad["encoder.bias"] = bad["encoder.bias"][:10]
    load_error(write(tmp_path / "b" / FILE, bad), r"encoder.bias has shape \[10\], expected \[64\]")
    path = write(tmp_path / "c" / FILE)
    path.write_bytes(path.read_bytes()[:300])
    load_error(path, f"{FILE}: not a readable PyTorch file")


def test_matches_its_release_only(tmp_path):
    assert deepseek_r1.matches(write(tmp_path / FILE))
    assert family_for(tmp_path / FILE) is deepseek_r1
    # Goodfire's name pattern, and other .pt files, are not this family's.
    for name in ("Llama-3.1-8B-Instruct-SAE-l19.pth", "layer3.sae.pt", "ae.pt", "model.pt"):
        assert not deepseek_r1.matches(write(tmp_path / name)), name
    # Any weights file in qresearch's repos in the Hugging Face cache is.
    cached = tmp_path / "models--qresearch--Llama-3-SAE-l7" / "snapshots" / "c" / "sae.pt"
    assert deepseek_r1.matches(write(cached)) and family_for(cached) is deepseek_r1
