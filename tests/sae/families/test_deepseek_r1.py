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
from support.hf_cache import offline_cache_env, populate_hf_cache

from steer.errors import SteerError
from steer.sae import load_sae
from steer.sae.families import deepseek_r1, family_for

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
REPO = "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19"
FILE = "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"


def tensors(dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """Seeded weights of the file's two torch Linear layers."""
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": (torch.randn(D_SAE, D_IN, generator=g) * 0.4).to(dtype),
        "encoder.bias": (torch.randn(D_SAE, generator=g) * 0.3 - 0.2).to(dtype),
        "decoder.weight": (torch.randn(D_IN, D_SAE, generator=g) * 0.2).to(dtype),
        "decoder.bias": (torch.randn(D_IN, generator=g) * 0.1).to(dtype),
    }


def write(path, weights=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors() if weights is None else weights, path)
    return path


def saelens_sae(repo_id, file_name, dtype):
    """SAELens's SAE from its own loader, built as from_pretrained_with_cfg_and_sparsity does."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import (
        deepseek_r1_sae_huggingface_loader,
        handle_config_defaulting,
    )

    overrides = {"device": "cpu", "dtype": dtype, "d_in": D_IN, "d_sae": D_SAE}
    cfg_dict, sd, _ = deepseek_r1_sae_huggingface_loader(
        repo_id=repo_id, folder_name=file_name, cfg_overrides=overrides
    )
    cfg_dict = handle_config_defaulting(cfg_dict)
    config_class = SAE.get_sae_config_class_for_architecture(cfg_dict["architecture"])
    sae_cfg = config_class.from_dict(cfg_dict)
    sae = SAE.get_sae_class_for_architecture(sae_cfg.architecture())(sae_cfg)
    sae.process_state_dict_for_loading(sd)
    sae.load_state_dict(sd, assign=True)
    return sae.to(dtype=getattr(torch, dtype))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    offline_cache_env(monkeypatch, folder)
    return folder


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_matches_saelens(tmp_path, cache, dtype):
    src = write(tmp_path / "src" / FILE)
    snapshot = populate_hf_cache(cache, REPO, {FILE: src})
    theirs = saelens_sae(REPO, FILE, dtype)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(7))
    copy = shutil.copy(src, tmp_path / FILE)
    overrides = {"dtype": dtype} if dtype != "bfloat16" else {}
    for path in (snapshot / FILE, copy):
        ours = load_sae(path, overrides=overrides)
        cfg = ours.cfg
        assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("standard", 16, 64, dtype)
        assert (cfg.hook_name, cfg.layer) == ("blocks.19.hook_resid_post", 19)
        assert cfg.model_name == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
        assert cfg.apply_b_dec_to_input is False
        for name, value in theirs.state_dict().items():
            assert torch.equal(getattr(ours, name), value), name
        with torch.no_grad():  # the same weights and formula: the same bits
            feats = ours.encode(x)
            assert torch.equal(feats, theirs.encode(x))
            assert torch.equal(ours.decode(feats), theirs.decode(feats))
    assert 0.05 < (feats > 0).float().mean().item() < 0.95


def _one_line(path, match):
    with pytest.raises(SteerError, match=match) as err:
        load_sae(path)
    assert "\n" not in str(err.value)
    return str(err.value)


class Note:
    """A class of the test's own: a file holding it can only be read by unpickling."""


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    weights = tensors()
    msg = _one_line(write(tmp_path / FILE, {**weights, "note": Note()}), "steer never unpickles")
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
    _one_line(write(tmp_path / "a" / FILE, bad), "tensor 'encoder.bias' is missing")
    bad = tensors()
    bad["encoder.bias"] = bad["encoder.bias"][:10]
    _one_line(write(tmp_path / "b" / FILE, bad), r"encoder.bias has shape \[10\], expected \[64\]")
    path = write(tmp_path / "c" / FILE)
    path.write_bytes(path.read_bytes()[:300])
    _one_line(path, f"{FILE}: not a readable PyTorch file")


def test_matches_its_release_only(tmp_path):
    assert deepseek_r1.matches(write(tmp_path / FILE))
    assert family_for(tmp_path / FILE) is deepseek_r1
    # Goodfire's name pattern, and other .pt files, are not this family's.
    for name in ("Llama-3.1-8B-Instruct-SAE-l19.pth", "layer3.sae.pt", "ae.pt", "model.pt"):
        assert not deepseek_r1.matches(write(tmp_path / name)), name
    # Any weights file in qresearch's repos in the Hugging Face cache is.
    cached = tmp_path / "models--qresearch--Llama-3-SAE-l7" / "snapshots" / "c" / "sae.pt"
    assert deepseek_r1.matches(write(cached)) and family_for(cached) is deepseek_r1
