"""Qwen Scope files (``layer<N>.sae.pt``), read as SAELens 6.54's ``qwen_scope`` loader reads
them: the fixture is put into an offline Hugging Face cache under a Qwen Scope repo name,
loaded by SAELens's loader (with tiny sizes, which SAELens takes from the repo name), built into
its SAE the way ``SAE.from_pretrained_with_cfg_and_sparsity`` does, and compared."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch
import torch
from support.hf_cache import populate_hf_cache
from support.pickled import Stowaway
from support.sae_files import load_error, save_pt
from support.saelens_peer import assert_same_sae, saelens_peer, seeded_inputs

from steer.sae import load_sae, read_sae_config
from steer.sae.families import family_for, qwenscope

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
# The release names' pattern with k=8, so top-k cuts into the 64 features.
REPO = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_8"
FILE = "layer5.sae.pt"


def tensors() -> dict[str, torch.Tensor]:
    """Seeded weights in Qwen Scope's layout: W_enc [d_sae, d_in], W_dec [d_in, d_sae]."""
    g = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(D_SAE, D_IN, generator=g) * 0.4,
        "W_dec": torch.randn(D_IN, D_SAE, generator=g) * 0.2,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.3 - 2.0,  # about 7 of 64 positive
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
    }


def write(path, weights=None):
    return save_pt(path, tensors() if weights is None else weights)


def test_matches_saelens(tmp_path, cache):
    src = write(tmp_path / "src" / FILE)
    snapshot = populate_hf_cache(cache, REPO, {FILE: src})
    theirs, _ = saelens_peer("qwen_scope", REPO, FILE, d_in=D_IN, d_sae=D_SAE)
    x = seeded_inputs(D_IN)
    copy = shutil.copy(src, tmp_path / FILE)
    # The repo id from the cache folder, from the release's hint, or k given outright.
    for path, overrides in ((snapshot / FILE, {}), (copy, {"repo_id": REPO}), (copy, {"k": 8})):
        ours = load_sae(path, overrides=overrides)
        cfg = ours.cfg
        assert (cfg.architecture, cfg.k, cfg.d_in, cfg.d_sae) == ("topk", 8, D_IN, D_SAE)
        assert (cfg.hook_name, cfg.hf_hook_name, cfg.layer) == (
            "blocks.5.hook_resid_post", "model.layers.5", 5
        )  # fmt: skip
        assert cfg.apply_b_dec_to_input is False and cfg.dtype == "float32"
        if "k" not in overrides:
            assert cfg.model_name == "Qwen/Qwen3-1.7B-Base" and cfg.metadata["repo_id"] == REPO
        feats = assert_same_sae(ours, theirs, x)  # the same weights and formula: same bits
    on = (feats > 0).sum(dim=-1)
    assert on.max() == 8 and on.min() < 8  # top-k cut the rest; ReLU some of the k too


def test_release_names_and_the_repo_config(tmp_path):
    path = write(tmp_path / "repo" / "layer0.sae.pt")
    cfg = read_sae_config(path, overrides={"repo_id": "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"})
    assert (cfg.k, cfg.model_name, cfg.layer) == (50, "Qwen/Qwen3-8B-Base", 0)
    # A whole repo downloaded to a folder: its own config.json says k and the model.
    repo_config = {"model_type": "topk_sae", "base_model": "Qwen/Qwen3-1.7B-Base", "d_model": 16,
                   "d_sae": 64, "k": 12, "num_layers": 28, "hook_point": "resid_post"}  # fmt: skip
    (tmp_path / "repo" / "config.json").write_text(json.dumps(repo_config))
    cfg = read_sae_config(path)
    assert (cfg.k, cfg.model_name) == (12, "Qwen/Qwen3-1.7B-Base")
    assert read_sae_config(path, overrides={"k": 4}).k == 4  # an override wins


def test_without_k_says_to_give_it(tmp_path):
    msg = load_error(write(tmp_path / FILE), "the TopK k is not known")
    assert "give `k:`" in msg and FILE in msg


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    weights = tensors()
    msg = load_error(
        write(tmp_path / FILE, {**weights, "meta": Stowaway()}), "steer never unpickles"
    )
    assert "layer5.sae.safetensors" in msg
    converted = tmp_path / "layer5.sae.safetensors"
    safetensors.torch.save_file(weights, str(converted))
    assert family_for(converted) is qwenscope
    loaded = load_sae(converted, overrides={"repo_id": REPO})
    assert loaded.cfg.k == 8 and loaded.cfg.layer == 5
    assert torch.equal(loaded.W_dec, weights["W_dec"].T)


def test_bad_files(tmp_path):
    k = {"k": 8}
    bad = tensors()
    del bad["b_enc"]
    load_error(write(tmp_path / "a" / FILE, bad), "tensor 'b_enc' is missing", overrides=k)
    bad = tensors()
    bad["W_dec"] = bad["W_dec"].T.contiguous()  # stored in steer's layout by mistake
    load_error(
        write(tmp_path / "b" / FILE, bad),
        r"W_dec has shape \[64, 16\], expected \[16, 64\]",
        overrides=k,
    )
    path = write(tmp_path / "c" / FILE)
    path.write_bytes(path.read_bytes()[:300])
    load_error(path, f"{FILE}: not a readable PyTorch file", overrides=k)
    load_error(write(tmp_path / "d" / FILE), "k must be an integer", overrides={"k": 65})


def test_matches_layer_files_only(tmp_path):
    assert qwenscope.matches(write(tmp_path / FILE))
    assert qwenscope.matches(write(tmp_path / "layer12.sae.safetensors"))
    for name in ("layer5.pt", "ae.pt", "Llama-3.1-8B-Instruct-SAE-l19.pth", "sae.pt"):
        assert not qwenscope.matches(write(tmp_path / name)), name
    assert family_for(tmp_path / FILE) is qwenscope
