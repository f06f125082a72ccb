"""Goodfire's SAE files (``<model>-SAE-l<N>.pth``), read as SAELens 6.54's ``goodfire`` loader
reads them: the fixture is put into an offline Hugging Face cache under Goodfire's repo, loaded
by SAELens's loader (with tiny sizes, which SAELens hard-codes per repo), built into its SAE
the way ``SAE.from_pretrained_with_cfg_and_sparsity`` does, and compared."""

from __future__ import annotations

import shutil

import pytest
import safetensors.torch
import torch
from support.hf_cache import offline_cache_env, populate_hf_cache

from steer.errors import SteerError
from steer.sae import load_sae, read_sae_config
from steer.sae.families import family_for, goodfire

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
REPO = "Goodfire/Llama-3.1-8B-Instruct-SAE-l19"
FILE = "Llama-3.1-8B-Instruct-SAE-l19.pth"


def tensors(dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Seeded weights of Goodfire's two torch Linear layers."""
    g = torch.Generator().manual_seed(0)
    return {
        "encoder_linear.weight": (torch.randn(D_SAE, D_IN, generator=g) * 0.4).to(dtype),
        "encoder_linear.bias": (torch.randn(D_SAE, generator=g) * 0.3 - 0.2).to(dtype),
        "decoder_linear.weight": (torch.randn(D_IN, D_SAE, generator=g) * 0.2).to(dtype),
        "decoder_linear.bias": (torch.randn(D_IN, generator=g) * 0.1).to(dtype),
    }


def write(path, weights=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors() if weights is None else weights, path)
    return path


def saelens_sae(repo_id, file_name, dtype="float32"):
    """SAELens's SAE from its own loader, built as from_pretrained_with_cfg_and_sparsity does."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import (
        get_goodfire_huggingface_loader,
        handle_config_defaulting,
    )

    overrides = {"device": "cpu", "dtype": dtype, "d_in": D_IN, "d_sae": D_SAE}
    cfg_dict, sd, _ = get_goodfire_huggingface_loader(
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_saelens(tmp_path, cache, dtype):
    src = write(tmp_path / "src" / FILE)
    snapshot = populate_hf_cache(cache, REPO, {FILE: src})
    theirs = saelens_sae(REPO, FILE, dtype)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(7))
    copy = shutil.copy(src, tmp_path / FILE)
    for path in (snapshot / FILE, copy):
        ours = load_sae(path, overrides={"dtype": dtype} if dtype != "float32" else {})
        cfg = ours.cfg
        assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("standard", 16, 64, dtype)
        assert (cfg.hook_name, cfg.layer) == ("blocks.19.hook_resid_post", 19)
        assert cfg.model_name == "meta-llama/Llama-3.1-8B-Instruct"
        assert cfg.apply_b_dec_to_input is False
        assert cfg.metadata["dataset_path"] == "lmsys/lmsys-chat-1m"
        for name, value in theirs.state_dict().items():
            assert torch.equal(getattr(ours, name), value), name
        with torch.no_grad():  # the same weights and formula: the same bits
            feats = ours.encode(x)
            assert torch.equal(feats, theirs.encode(x))
            assert torch.equal(ours.decode(feats), theirs.decode(feats))
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


class Config:
    """A class of the test's own: a file holding it can only be read by unpickling."""


class Autoencoder(torch.nn.Module):
    """A whole module saved with torch.save, as some SAE files are."""

    def __init__(self):
        super().__init__()
        self.encoder_linear = torch.nn.Linear(D_IN, D_SAE)
        self.decoder_linear = torch.nn.Linear(D_SAE, D_IN)


def _one_line(path, match):
    with pytest.raises(SteerError, match=match) as err:
        load_sae(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    weights = tensors()
    path = write(tmp_path / FILE, {**weights, "config": Config()})
    msg = _one_line(path, "steer never unpickles")
    assert FILE in msg and "Llama-3.1-8B-Instruct-SAE-l19.safetensors" in msg
    module = tmp_path / "module" / FILE
    module.parent.mkdir()
    torch.save(Autoencoder(), module)
    _one_line(module, "steer never unpickles")
    converted = tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.safetensors"
    safetensors.torch.save_file(weights, str(converted))
    assert family_for(converted) is goodfire
    loaded = load_sae(converted)
    assert loaded.cfg.layer == 19
    assert torch.equal(loaded.W_enc, weights["encoder_linear.weight"].T)


def test_bad_files(tmp_path):
    bad = tensors()
    del bad["decoder_linear.bias"]
    _one_line(write(tmp_path / "a" / FILE, bad), "tensor 'decoder_linear.bias' is missing")
    bad = tensors()
    bad["decoder_linear.weight"] = bad["decoder_linear.weight"].T.contiguous()
    _one_line(
        write(tmp_path / "b" / FILE, bad),
        r"decoder_linear.weight has shape \[64, 16\], expected \[16, 64\]",
    )
    path = write(tmp_path / "c" / FILE)
    path.write_bytes(path.read_bytes()[:300])
    _one_line(path, f"{FILE}: not a readable PyTorch file")
    _one_line(write(tmp_path / "d" / FILE, [torch.ones(2)]), "holds a list")


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
