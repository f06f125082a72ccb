"""Goodfire's SAE files (``<model>-SAE-l<N>.pth``), read as SAELens 6.54's ``goodfire`` loader
reads them: the fixture is put into an offline Hugging Face cache under Goodfire's repo, loaded
by SAELens's loader (with tiny sizes, which SAELens hard-codes per repo), built into its SAE
the way ``SAE.from_pretrained_with_cfg_and_sparsity`` does, and compared."""

from __future__ import annotations

import shutil

import pytest
import safetensors.torch
import torch
from support.hf_cache import populate_hf_cache
from support.pickled import Stowaway
from support.sae_files import linear_layers, load_error, save_pt
from support.saelens_peer import assert_same_sae, saelens_peer, seeded_inputs

from steer.sae import load_sae, read_sae_config
from steer.sae.families import family_for, goodfire

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
REPO = "Goodfire/Llama-3.1-8B-Instruct-SAE-l19"
FILE = "Llama-3.1-8B-Instruct-SAE-l19.pth"


def tensors() -> dict[str, torch.Tensor]:
    """Seeded weights of Goodfire's two torch Linear layers."""
    return linear_layers(D_IN, D_SAE, encoder="encoder_linear", decoder="decoder_linear")


def write(path, weights=None):
    return save_pt(path, tensors() if weights is None else weights)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_saelens(tmp_path, cache, dtype):
    src = write(tmp_path / "src" / FILE)
    snapshot = populate_hf_cache(cache, REPO, {FILE: src})
    theirs, _ = saelens_peer("goodfire", REPO, FILE, dtype=dtype, d_in=D_IN, d_sae=D_SAE)
    x = seeded_inputs(D_IN)
    copy = shutil.copy(src, tmp_path / FILE)
    for path in (snapshot / FILE, copy):
        ours = load_sae(path, overrides={"dtype": dtype} if dtype != "float32" else {})
        cfg = ours.cfg
        assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("standard", 16, 64, dtype)
        assert (cfg.hook_name, cfg.layer) == ("blocks.19.hook_resid_post", 19)
        assert cfg.model_name == "meta-llama/Llama-3.1-8B-Instruct"
        assert cfg.apply_b_dec_to_input is False
        assert cfg.metadata["dataset_path"] == "lmsys/lmsys-chat-1m"
        feats = assert_same_sae(ours, theirs, x)  # the same weights and formula: same bits
    assert 0.05 < (feats > 0).float().mean().item() < 0.95


def test_names_give_the_layer_and_model(tmp_path):
    cfg = read_sae_config(write(tmp_path / "Llama-3.3-70B-Instruct-SAE-l50.pt"))
    assert cfg.hook_name == "blocks.50.hook_resid_post"
    assert cfg.model_name == "meta-llama/Llama-3.3-70B-Instruct"
    cfg = read_sae_config(write(tmp_path / "Mistral-7B-SAE-l3.pth"))
    assert (cfg.hook_name, cfg.model_name) == ("blocks.3.hook_resid_post", None)
    cfg = read_sae_config(
        write(tmp_path / "x" / "Mistral-7B-SAE-l3.pth"),
        overrides={"model_name": "mistralai/Mistral-7B-v0.1", "repo_id": "Goodfire/x"},
    )
    assert cfg.model_name == "mistralai/Mistral-7B-v0.1" and cfg.metadata["repo_id"] == "Goodfire/x"


class Autoencoder(torch.nn.Module):
    """A whole module saved with torch.save, as some SAE files are."""

    def __init__(self):
        super().__init__()
        self.encoder_linear = torch.nn.Linear(D_IN, D_SAE)
        self.decoder_linear = torch.nn.Linear(D_SAE, D_IN)


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    weights = tensors()
    path = write(tmp_path / FILE, {**weights, "config": Stowaway()})
    msg = load_error(path, "steer never unpickles")
    assert FILE in msg and "Llama-3.1-8B-Instruct-SAE-l19.safetensors" in msg
    module = tmp_path / "module" / FILE
    module.parent.mkdir()
    torch.save(Autoencoder(), module)
    load_error(module, "steer never unpickles")
    converted = tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.safetensors"
    safetensors.torch.save_file(weights, str(converted))
    assert family_for(converted) is goodfire
    loaded = load_sae(converted)
    assert loaded.cfg.layer == 19
    assert torch.equal(loaded.W_enc, weights["encoder_linear.weight"].T)


def test_bad_files(tmp_path):
    bad = tensors()
    del bad["decoder_linear.bias"]
    load_error(write(tmp_path / "a" / FILE, bad), "tensor 'decoder_linear.bias' is missing")
    bad = tensors()
    bad["decoder_linear.weight"] = bad["decoder_linear.weight"].T.contiguous()
    load_error(
        write(tmp_path / "b" / FILE, bad),
        r"decoder_linear.weight has shape \[64, 16\], expected \[16, 64\]",
    )
    path = write(tmp_path / "c" / FILE)
    path.write_bytes(path.read_bytes()[:300])
    load_error(path, f"{FILE}: not a readable PyTorch file")
    load_error(write(tmp_path / "d" / FILE, [torch.ones(2)]), "holds a list")


def test_matches_goodfire_names_only(tmp_path):
    assert goodfire.matches(write(tmp_path / FILE))
    assert goodfire.matches(write(tmp_path / "Llama-3.3-70B-Instruct-SAE-l50.pt"))
    deepseek = write(tmp_path / "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt")
    assert not goodfire.matches(deepseek) and family_for(deepseek).NAME == "deepseek_r1"
    assert not goodfire.matches(write(tmp_path / "layer5.sae.pt"))
    assert not goodfire.matches(write(tmp_path / "ae.pt"))
    cached = tmp_path / "models--qresearch--Llama-3-SAE-l7" / "snapshots" / "c" / "x-SAE-l7.pt"
    assert not goodfire.matches(write(cached))
    cached = tmp_path / "models--Goodfire--DeepSeek-R1-SAE-l37" / "snapshots" / "c"
    assert goodfire.matches(write(cached / "DeepSeek-R1-Distill-SAE-l37.pt"))
