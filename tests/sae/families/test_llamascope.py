"""Llama Scope and Llama Scope R1 Distill folders, read as SAELens 6.54's own ``llama_scope`` and
``llama_scope_r1_distill`` loaders read them: each fixture is also put into an offline Hugging
Face cache, loaded by SAELens's loader and built into its SAE the way
``SAE.from_pretrained_with_cfg_and_sparsity`` does, and the two SAEs are compared."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from support.hf_cache import populate_hf_cache
from support.sae_files import linear_layers, load_error
from support.saelens_peer import saelens_peer

from steer.errors import SteerError
from steer.sae import load_sae, read_sae_config
from steer.sae.families import family_for, llamascope

pytest.importorskip("sae_lens")

D_IN, D_SAE = 16, 64
REPO, FOLDER = "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L3R-8x"
R1_REPO, R1_FOLDER = "fnlp/Llama-Scope-R1-Distill", "800M-Slimpajama-0-OpenR1-Math-220k/L3R"
HOOK = "blocks.3.hook_resid_post"
AVG_NORM = 5.5  # hyperparams.json's average input norm: factor sqrt(16) / 5.5
R1_NORM = 1.25  # the R1 file's norm tensor: factor 4 / 1.25 = 3.2, exact in binary


def _linear(dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    return linear_layers(D_IN, D_SAE, dtype=dtype, seed=seed, encoder_scale=0.3)


def write_v1(folder, *, tensors=None, **changes):
    """A Llama Scope folder as in fnlp/Llama3_1-8B-Base-LXR-8x: hyperparams.json (the real
    keys) and checkpoints/final.safetensors in bfloat16."""
    hp = {
        "d_model": D_IN, "d_sae": D_SAE, "expansion_factor": D_SAE // D_IN,
        "hook_point_in": HOOK, "hook_point_out": HOOK, "act_fn": "jumprelu",
        "jump_relu_threshold": 0.25, "norm_activation": "dataset-wise", "top_k": 8,
        "dataset_average_activation_norm": {"in": AVG_NORM, "out": AVG_NORM},
        "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False,
        "sparsity_include_decoder_norm": True, "dtype": "torch.bfloat16", "device": "cuda:0",
    }  # fmt: skip
    hp.update(changes)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    weights = _linear(torch.bfloat16) if tensors is None else tensors
    safetensors.torch.save_file(weights, str(folder / "checkpoints" / "final.safetensors"))
    return folder


def write_r1(folder, *, with_norm=True, **changes):
    """A Llama Scope R1 Distill folder: config.json and sae_weights.safetensors with a
    per-feature log threshold and lm_saes's average-norm tensor."""
    cfg = {
        "d_model": D_IN, "expansion_factor": D_SAE // D_IN, "hook_point_in": HOOK,
        "hook_point_out": HOOK, "act_fn": "jumprelu", "norm_activation": "dataset-wise",
        "sae_type": "sae", "top_k": 8,
    }  # fmt: skip
    cfg.update(changes)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(1)
    tensors = _linear(torch.float32, seed=2)
    tensors["log_jumprelu_threshold"] = torch.randn(D_SAE, generator=g) * 0.5 - 1.0
    if with_norm:
        tensors[f"dataset_average_activation_norm.{HOOK}"] = torch.tensor(R1_NORM)
    safetensors.torch.save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def _inputs(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, D_IN, generator=g)
    return (x / x.norm(dim=-1, keepdim=True) * AVG_NORM).to(dtype)  # inputs of the usual norm


def _compare(ours, theirs, x):
    """Feature activations bit-identical (W_enc * factor, b_enc and the threshold are the same
    bits); the decoder and reconstructions within one rounding: SAELens folds the factor as
    ``W_dec / f``, steer as ``W_dec * (1 / f)``, which may round a weight one ulp apart."""
    eps = torch.finfo(ours.W_dec.dtype).eps
    torch.testing.assert_close(ours.W_dec, theirs.W_dec, rtol=eps, atol=0)
    torch.testing.assert_close(ours.b_dec, theirs.b_dec, rtol=eps, atol=0)
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert f_ours.dtype == f_theirs.dtype
        assert torch.equal(f_ours, f_theirs)
        r_ours, r_theirs = ours.decode(f_ours), theirs.decode(f_theirs)
    assert (r_ours - r_theirs).abs().max() <= 4 * eps * r_theirs.abs().max()
    return f_ours


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_llama_scope_matches_saelens(tmp_path, cache, dtype):
    src = write_v1(tmp_path / "src" / FOLDER)
    snapshot = populate_hf_cache(cache, REPO, {
        f"{FOLDER}/hyperparams.json": src / "hyperparams.json",
        f"{FOLDER}/checkpoints/final.safetensors": src / "checkpoints" / "final.safetensors",
    })  # fmt: skip
    factor = D_IN**0.5 / AVG_NORM  # what the release list holds (sqrt(d_model) / norm)
    theirs, cfg_dict = saelens_peer(
        "llama_scope", REPO, FOLDER, dtype=dtype, norm_scaling_factor=factor
    )
    release = {"norm_scaling_factor": factor, "repo_id": REPO, "release": "llama_scope_lxr_8x"}
    if dtype == "float32":
        release["dtype"] = "float32"  # from_pretrained's default dtype, as an override
    x = _inputs(torch.float32)
    copy = shutil.copytree(src, tmp_path / "copy")
    for path, overrides in ((snapshot / FOLDER, release), (copy, {"dtype": dtype})):
        ours = load_sae(path, overrides=overrides)
        assert ours.cfg.dtype == dtype and ours.cfg.architecture == "jumprelu"
        assert torch.equal(ours.threshold, theirs.threshold)
        assert torch.equal(ours.W_enc, theirs.W_enc) and torch.equal(ours.b_enc, theirs.b_enc)
        feats = _compare(ours, theirs, x)
    assert cfg_dict["jump_relu_threshold"] == ours.cfg.metadata["jump_relu_threshold"]
    # A mix: features on and off, and positive pre-activations the threshold turns off.
    assert 0.05 < (feats > 0).float().mean().item() < 0.95
    with torch.no_grad():
        pre = ours.pre_acts(x)
    assert ((pre > 0) & (feats == 0)).any()


def test_llama_scope_config(tmp_path):
    folder = write_v1(tmp_path / FOLDER)
    cfg = read_sae_config(folder, overrides={"repo_id": REPO, "sae_id": "l3r_8x"})
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("jumprelu", 16, 64, "bfloat16")
    assert (cfg.hook_name, cfg.layer, cfg.model_name) == (HOOK, 3, "meta-llama/Llama-3.1-8B")
    assert cfg.apply_b_dec_to_input is False
    assert cfg.normalize_activations == "expected_average_only_in"
    assert cfg.norm_scaling_factor == 4 / AVG_NORM
    assert cfg.metadata["jump_relu_threshold"] == 0.25 * (4 / AVG_NORM)
    assert cfg.metadata["repo_id"] == REPO and cfg.metadata["sae_id"] == "l3r_8x"
    assert family_for(folder) is llamascope
    assert family_for(folder / "checkpoints" / "final.safetensors") is llamascope
    loaded = load_sae(folder)  # the factor folded: the config says so
    assert loaded.cfg.normalize_activations == "none"
    assert loaded.cfg.metadata["folded_norm_scaling_factor"] == 4 / AVG_NORM


def test_release_factor_wins_over_the_computed_one(tmp_path, cache):
    src = write_v1(tmp_path / "src" / FOLDER)
    populate_hf_cache(cache, REPO, {
        f"{FOLDER}/hyperparams.json": src / "hyperparams.json",
        f"{FOLDER}/checkpoints/final.safetensors": src / "checkpoints" / "final.safetensors",
    })  # fmt: skip
    theirs, _ = saelens_peer("llama_scope", REPO, FOLDER, dtype="bfloat16", norm_scaling_factor=0.5)
    ours = load_sae(src, overrides={"norm_scaling_factor": 0.5})
    assert ours.cfg.metadata["folded_norm_scaling_factor"] == 0.5
    _compare(ours, theirs, _inputs(torch.float32))


@pytest.mark.parametrize(("site", "hook"), [("A", "hook_attn_out"), ("M", "hook_mlp_out")])
def test_attention_and_mlp_sites_keep_their_hook(tmp_path, site, hook):
    folder = write_v1(
        tmp_path / f"Llama3_1-8B-Base-L5{site}-8x",
        hook_point_in=f"blocks.5.{hook}",
        hook_point_out=f"blocks.5.{hook}",
    )
    cfg = read_sae_config(folder)
    assert cfg.hook_name == f"blocks.5.{hook}" and cfg.layer is None


def test_r1_distill_matches_saelens(tmp_path, cache):
    src = write_r1(tmp_path / "src" / "L3R")
    snapshot = populate_hf_cache(cache, R1_REPO, {
        f"{R1_FOLDER}/config.json": src / "config.json",
        f"{R1_FOLDER}/sae_weights.safetensors": src / "sae_weights.safetensors",
    })  # fmt: skip
    factor = D_IN**0.5 / R1_NORM
    theirs, _ = saelens_peer(
        "llama_scope_r1_distill", R1_REPO, R1_FOLDER, norm_scaling_factor=factor
    )
    x = _inputs(torch.float32) / AVG_NORM * R1_NORM
    copy = shutil.copytree(src, tmp_path / "copy")
    for path, overrides in ((snapshot / R1_FOLDER, {"norm_scaling_factor": factor}), (copy, {})):
        ours = load_sae(path, overrides=overrides)
        cfg = ours.cfg
        assert (cfg.dtype, cfg.hook_name, cfg.layer) == ("float32", HOOK, 3)
        assert cfg.model_name == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
        assert cfg.metadata["folded_norm_scaling_factor"] == factor
        assert torch.equal(ours.threshold, theirs.threshold)
        feats = _compare(ours, theirs, x)
    assert 0.05 < (feats > 0).float().mean().item() < 0.95
    assert family_for(copy / "sae_weights.safetensors") is llamascope


def test_r1_without_a_norm_needs_the_release_factor(tmp_path):
    folder = write_r1(tmp_path / "L3R", with_norm=False)
    with pytest.raises(SteerError, match="needs norm_scaling_factor") as err:
        load_sae(folder)
    assert "\n" not in str(err.value)
    assert load_sae(folder, overrides={"norm_scaling_factor": 2.0}).cfg.d_sae == D_SAE


def test_bad_llama_scope_folders(tmp_path):
    bad = _linear(torch.bfloat16)
    del bad["encoder.bias"]
    msg = load_error(write_v1(tmp_path / "a", tensors=bad), "tensor 'encoder.bias' is missing")
    assert "final.safetensors" in msg
    bad = _linear(torch.bfloat16)
    bad["decoder.weight"] = bad["decoder.weight"].T.contiguous()
    load_error(write_v1(tmp_path / "b", tensors=bad), r"decoder.weight has shape \[64, 16\]")
    folder = write_v1(tmp_path / "c")
    weights = folder / "checkpoints" / "final.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    load_error(folder, "final.safetensors: not a readable safetensors file")
    folder = write_v1(tmp_path / "d")
    (folder / "hyperparams.json").write_text("{not json")
    load_error(folder, "hyperparams.json: not valid JSON")
    load_error(write_v1(tmp_path / "e", d_model=32), "d_model is 32, but the weights are d_in=16")
    load_error(
        write_v1(tmp_path / "f", dataset_average_activation_norm={}),
        "dataset_average_activation_norm.in is missing",
    )
    load_error(
        write_v1(tmp_path / "g", jump_relu_threshold="high"), "jump_relu_threshold must be a number"
    )
    folder = write_v1(tmp_path / "h")
    (folder / "checkpoints" / "final.safetensors").unlink()
    load_error(folder, "weights file final.safetensors is missing")


def test_transcoders_are_refused(tmp_path):
    folder = write_v1(
        tmp_path / "Llama3_1-8B-Base-L8TC-8x",
        hook_point_in="blocks.8.ln2.hook_normalized",
        hook_point_out="blocks.8.hook_mlp_out",
        dataset_average_activation_norm={"in": 64.0, "out": 3.390625},
    )
    load_error(folder, "is a transcoder")


def test_matches_only_its_own_layouts(tmp_path):
    v1, r1 = write_v1(tmp_path / "v1"), write_r1(tmp_path / "r1")
    assert llamascope.matches(v1) and llamascope.matches(r1)
    assert llamascope.matches(r1 / "sae_weights.safetensors")
    saelens = tmp_path / "saelens"  # cfg.json + sae_weights.safetensors is SAELens's layout
    saelens.mkdir()
    for name in ("cfg.json", "config.json", "sae_weights.safetensors"):
        (saelens / name).write_text("{}")
    assert not llamascope.matches(saelens)
    assert not llamascope.matches(saelens / "sae_weights.safetensors")
    other = tmp_path / "dl"  # dictionary_learning: config.json + ae.pt
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "ae.pt").write_bytes(b"")
    assert not llamascope.matches(other) and not llamascope.matches(other / "ae.pt")


def test_reading_the_config_needs_no_torch(tmp_path):
    write_v1(tmp_path / "v1")
    write_r1(tmp_path / "r1")
    code = (
        "import sys; from steer.sae import read_sae_config; "
        f"[read_sae_config(p) for p in ({str(tmp_path / 'v1')!r}, {str(tmp_path / 'r1')!r})]; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
