"""Saving and loading: SAELens v6 layout, pre-6.0 configs, sparsify folders, atomic saves."""

from __future__ import annotations

import json
import os

import pytest
import safetensors
import safetensors.torch
import torch

from steer.errors import SteerError
from steer.sae import check_fits_model, load_sae, read_sae_config, save_sae
from steer.sae.formats import SAE_LENS_VERSION

ARCHS = ["standard", "topk", "jumprelu"]
SAELENS_TOP_KEYS = [
    "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
    "reshape_activations", "metadata", "architecture",
]  # fmt: skip


def _params(sae):
    return dict(sae.state_dict())


def _assert_same(a, b):
    assert a.cfg == b.cfg
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip(tmp_path, make_sae, arch):
    sae = make_sae(arch, metadata={"context_size": 128, "note": {"nested": [1, 2]}})
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(sae)
    _assert_same(sae, loaded)
    assert read_sae_config(tmp_path / "sae") == sae.cfg
    x = torch.randn(3, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_round_trip_bfloat16(tmp_path, make_sae):
    sae = make_sae("jumprelu", dtype="bfloat16")
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.W_enc.dtype == torch.bfloat16
    _assert_same(sae, loaded)


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_v6_layout(tmp_path, make_sae, arch):
    sae = make_sae(arch, d_in=16, d_sae=64)
    save_sae(sae, tmp_path / "sae", sparsity=torch.full((64,), -2.0), extra_metadata={"seed": 3})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    expected_keys = SAELENS_TOP_KEYS + (["k"] if arch == "topk" else [])
    assert list(cfg) == expected_keys
    assert cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["dtype"] == "float32"
    assert cfg["device"] == "cpu" and cfg["reshape_activations"] == "none"
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    assert cfg["architecture"] == arch
    if arch == "topk":
        assert cfg["k"] == 4
    meta = cfg["metadata"]
    assert meta["sae_lens_version"] == SAE_LENS_VERSION
    assert meta["model_name"] == "test-model"
    assert meta["hook_name"] == "blocks.0.hook_resid_post"
    assert meta["hf_hook_name"] == "model.layers.0"
    assert meta["hook_head_index"] is None and meta["prepend_bos"] is True
    assert "context_size" in meta and "dataset_path" in meta
    assert meta["seed"] == 3

    shapes = {"W_enc": [16, 64], "b_enc": [64], "W_dec": [64, 16], "b_dec": [16]}
    if arch == "jumprelu":
        shapes["threshold"] = [64]
    with safetensors.safe_open(tmp_path / "sae" / "sae_weights.safetensors", "pt") as f:
        assert {k: f.get_slice(k).get_shape() for k in f.keys()} == shapes  # noqa: SIM118
        assert all(f.get_slice(k).get_dtype() == "F32" for k in f.keys())  # noqa: SIM118
    sparsity = safetensors.torch.load_file(tmp_path / "sae" / "sparsity.safetensors")
    assert list(sparsity) == ["sparsity"] and torch.equal(
        sparsity["sparsity"], torch.full((64,), -2.0)
    )


def test_extra_metadata_round_trips(tmp_path, make_sae):
    sae = make_sae("topk")
    extra = {"context_size": 256, "dataset_path": [{"path": "a.txt", "sha256": "00"}], "x": 1.5}
    save_sae(sae, tmp_path / "sae", extra_metadata=extra)
    meta = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]
    assert meta["context_size"] == 256 and meta["dataset_path"][0]["path"] == "a.txt"
    assert load_sae(tmp_path / "sae").cfg.metadata == extra


def test_weights_stored_in_config_dtype(tmp_path, make_sae):
    sae = make_sae("standard", dtype="float16")
    save_sae(sae, tmp_path / "sae")
    with safetensors.safe_open(tmp_path / "sae" / "sae_weights.safetensors", "pt") as f:
        assert f.get_slice("W_enc").get_dtype() == "F16"
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["dtype"] == "float16"


def test_storage_dtype_halves_the_file_and_loads_in_config_dtype(tmp_path, make_sae):
    sae = make_sae("topk")
    save_sae(sae, tmp_path / "full")
    save_sae(sae, tmp_path / "half", storage_dtype=torch.float16)
    with safetensors.safe_open(tmp_path / "half" / "sae_weights.safetensors", "pt") as f:
        assert f.get_slice("W_dec").get_dtype() == "F16"
    assert json.loads((tmp_path / "half" / "cfg.json").read_text())["dtype"] == "float32"
    full = (tmp_path / "full" / "sae_weights.safetensors").stat().st_size
    half = (tmp_path / "half" / "sae_weights.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = load_sae(tmp_path / "half")
    assert loaded.W_dec.dtype == torch.float32
    assert torch.equal(loaded.W_dec, sae.W_dec.detach().half().float())


def test_device_argument(tmp_path, make_sae):
    save_sae(make_sae("standard"), tmp_path / "sae")
    assert load_sae(tmp_path / "sae", device="cpu").W_enc.device.type == "cpu"


def _write_saelens(folder, cfg: dict, tensors: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    safetensors.torch.save_file(tensors, folder / "sae_weights.safetensors")


def test_pre_6_flat_config_loads(tmp_path, make_sae):
    sae = make_sae("topk", k=4)
    flat = {
        "model_name": "gpt2",
        "hook_point": "blocks.3.hook_resid_post",
        "hook_point_layer": 3,
        "hook_point_head_index": None,
        "d_in": 16,
        "d_sae": 64,
        "dtype": "torch.float32",
        "device": "cuda",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "finetuning_scaling_factor": False,
        "context_size": 128,
        "prepend_bos": True,
        "dataset_path": "Skylion007/openwebtext",
        "lr": 0.0003,
        "l1_coefficient": 5,
        "sae_lens_training_version": "3.2.0",
    }
    tensors = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    tensors["scaling_factor"] = torch.ones(64)  # old files carry it; all ones means unused
    _write_saelens(tmp_path / "old", flat, tensors)
    loaded = load_sae(tmp_path / "old")
    cfg = loaded.cfg
    assert (cfg.architecture, cfg.k, cfg.dtype) == ("topk", 4, "float32")
    assert (cfg.hook_name, cfg.layer, cfg.model_name) == ("blocks.3.hook_resid_post", 3, "gpt2")
    assert cfg.normalize_activations == "none"
    assert cfg.metadata == {
        "hook_layer": 3,
        "context_size": 128,
        "dataset_path": "Skylion007/openwebtext",
        "sae_lens_training_version": "3.2.0",
    }
    x = torch.randn(5, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_pre_6_relu_config_defaults_to_standard(tmp_path, make_sae):
    sae = make_sae("standard")
    flat = {"hook_name": "blocks.1.hook_resid_pre", "d_in": 16, "d_sae": 64, "dtype": "float32"}
    _write_saelens(tmp_path / "old", flat, dict(sae.state_dict()))
    loaded = load_sae(tmp_path / "old")
    assert loaded.cfg.architecture == "standard" and loaded.cfg.layer == 0


def _write_sparsify(folder, sae, **cfg_overrides) -> None:
    """A sparsify hookpoint folder holding the same weights as a TopK ``sae``."""
    folder.mkdir(parents=True)
    cfg = {
        "activation": "topk",
        "expansion_factor": 4,
        "normalize_decoder": True,
        "num_latents": sae.cfg.d_sae,
        "k": sae.cfg.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.cfg.d_in,
        **cfg_overrides,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    tensors = {
        "encoder.weight": sae.W_enc.detach().T.contiguous(),
        "encoder.bias": sae.b_enc.detach().clone(),
        "W_dec": sae.W_dec.detach().clone(),
        "b_dec": sae.b_dec.detach().clone(),
    }
    safetensors.torch.save_file(tensors, folder / "sae.safetensors")


@pytest.mark.parametrize("via_parent", [False, True])
def test_sparsify_folder_loads(tmp_path, make_sae, via_parent):
    sae = make_sae("topk", k=4)
    _write_sparsify(tmp_path / "repo" / "layers.3", sae)
    loaded = load_sae(tmp_path / "repo" if via_parent else tmp_path / "repo" / "layers.3")
    cfg = loaded.cfg
    assert (cfg.architecture, cfg.k, cfg.d_in, cfg.d_sae) == ("topk", 4, 16, 64)
    assert (cfg.hf_hook_name, cfg.hook_name, cfg.layer) == (
        "model.layers.3",
        "blocks.3.hook_resid_post",
        3,
    )
    assert cfg.apply_b_dec_to_input is True
    x = torch.randn(2, 6, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded(x), sae(x))
    # and it converts to SAELens format
    save_sae(loaded, tmp_path / "converted")
    _assert_same(load_sae(tmp_path / "converted"), loaded)


def test_sparsify_dtype_from_weights(tmp_path, make_sae):
    sae = make_sae("topk", dtype="bfloat16")
    _write_sparsify(tmp_path / "layers.0", sae)
    assert read_sae_config(tmp_path / "layers.0").dtype == "bfloat16"
    assert load_sae(tmp_path / "layers.0").W_enc.dtype == torch.bfloat16


def test_sparsify_num_latents_zero_uses_expansion_factor(tmp_path, make_sae):
    sae = make_sae("topk", d_in=16, d_sae=64)
    _write_sparsify(tmp_path / "layers.1", sae, num_latents=0, expansion_factor=4)
    assert read_sae_config(tmp_path / "layers.1").d_sae == 64


def test_sparsify_repo_with_several_hookpoints(tmp_path, make_sae):
    sae = make_sae("topk")
    _write_sparsify(tmp_path / "repo" / "layers.3", sae)
    _write_sparsify(tmp_path / "repo" / "layers.5", sae)
    with pytest.raises(SteerError, match=r"holds 2 SAEs \(layers.3, layers.5\)"):
        load_sae(tmp_path / "repo")
    assert load_sae(tmp_path / "repo" / "layers.5").cfg.layer == 5


def test_interrupted_save_keeps_the_old_sae(tmp_path, make_sae, monkeypatch):
    old = make_sae("standard", seed=1)
    save_sae(old, tmp_path / "sae", sparsity=torch.zeros(64))
    before = sorted(os.listdir(tmp_path))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(SteerError, match="No space left on device") as info:
        save_sae(make_sae("standard", seed=2), tmp_path / "sae")
    assert str(tmp_path / "sae") in str(info.value)
    monkeypatch.undo()
    _assert_same(load_sae(tmp_path / "sae"), old)
    assert sorted(os.listdir(tmp_path)) == before  # no temporary folders left behind
    assert sorted(os.listdir(tmp_path / "sae")) == [
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    ]


def test_save_replaces_an_sae_and_keeps_other_files(tmp_path, make_sae):
    save_sae(make_sae("standard", seed=1), tmp_path / "sae", sparsity=torch.zeros(64))
    (tmp_path / "sae" / "eval.json").write_text("{}")
    new = make_sae("topk", seed=2)
    save_sae(new, tmp_path / "sae")
    _assert_same(load_sae(tmp_path / "sae"), new)
    # the old sparsity described the old weights, so it is gone; the user's file stays
    assert sorted(os.listdir(tmp_path / "sae")) == [
        "cfg.json",
        "eval.json",
        "sae_weights.safetensors",
    ]
    assert sorted(os.listdir(tmp_path)) == ["sae"]


def test_save_refuses_to_replace_what_is_not_an_sae(tmp_path, make_sae):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(SteerError, match="refusing to replace it"):
        save_sae(make_sae("standard"), tmp_path / "notes")
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SteerError, match="refusing to replace it"):
        save_sae(make_sae("standard"), tmp_path / "file")
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me"
    save_sae(make_sae("standard"), tmp_path / "empty")  # a new or empty folder is fine


def test_check_fits_model(make_sae):
    sae = make_sae("standard", d_in=16, hf_hook_name="model.layers.3")
    check_fits_model(sae, d_model=16, n_layers=4, where="saes[0]")
    with pytest.raises(SteerError, match=r"^saes\[0\]: SAE d_in is 16 but the model's residual"):
        check_fits_model(sae, d_model=32, n_layers=4, where="saes[0]")
    with pytest.raises(SteerError, match="layer 3 is out of range"):
        check_fits_model(sae, d_model=16, n_layers=3, where="saes[0]")
    with pytest.raises(SteerError, match="layer 9 is out of range"):
        check_fits_model(sae, d_model=16, n_layers=4, where="saes[0]", layer=9)
    mlp = make_sae("standard", hf_hook_name=None, hook_name="blocks.1.hook_mlp_out")
    with pytest.raises(SteerError, match="not the residual stream"):
        check_fits_model(mlp, d_model=16, n_layers=4, where="saes[0]")
    unknown = make_sae("standard", hf_hook_name=None, hook_name=None)
    with pytest.raises(SteerError, match="names no layer"):
        check_fits_model(unknown, d_model=16, n_layers=4, where="saes[0]")
    check_fits_model(unknown, d_model=16, n_layers=4, where="saes[0]", layer=2)
