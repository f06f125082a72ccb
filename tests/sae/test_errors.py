"""Every broken SAE folder gives one line naming the path and what is wrong."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from steer.errors import SteerError
from steer.sae import load_sae, read_sae_config, save_sae


def _good(tmp_path, make_sae, arch="standard"):
    folder = tmp_path / "sae"
    save_sae(make_sae(arch), folder)
    return folder


def _edit_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in changes.items():
        if value is ...:
            cfg.pop(key)
        else:
            cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _edit_weights(folder, drop=(), **replace):
    file = folder / "sae_weights.safetensors"
    tensors = safetensors.torch.load_file(file)
    for name in drop:
        tensors.pop(name)
    tensors.update(replace)
    safetensors.torch.save_file(tensors, file)


def _fails(path, needle, *, cfg_only=True):
    """load_sae (and read_sae_config, for cfg.json problems) raise one line with ``needle``
    and a path."""
    readers = [load_sae, read_sae_config] if cfg_only else [load_sae]
    for read in readers:
        with pytest.raises(SteerError) as info:
            read(path)
        message = str(info.value)
        assert "\n" not in message
        assert needle in message, message
        assert str(path) in message, message
    return message


def test_missing_path(tmp_path):
    _fails(tmp_path / "nope", "no such SAE folder")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f.safetensors").write_bytes(b"x")
    _fails(tmp_path / "f.safetensors", "is a file, not an SAE folder")


def test_folder_without_cfg(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", "no cfg.json here")


def test_cfg_not_json(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    (folder / "cfg.json").write_text('{\n  "d_in": 16,\n  "d_sae": ,\n}')
    message = _fails(folder, "cfg.json: not valid JSON: Expecting value at line 3 column 12")
    assert message.startswith(str(folder / "cfg.json"))


def test_cfg_not_an_object(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    (folder / "cfg.json").write_text("[1, 2]")
    _fails(folder, "must hold a JSON object")


@pytest.mark.parametrize("key", ["d_in", "d_sae"])
def test_missing_required_key(tmp_path, make_sae, key):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, **{key: ...})
    _fails(folder, f"missing required key '{key}'")


def test_bad_value_types(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, d_in="sixteen")
    _fails(folder, "d_in must be an integer, got 'sixteen'")
    _edit_cfg(folder, d_in=16, dtype="int8")
    _fails(folder, "dtype 'int8' is not supported")
    _edit_cfg(folder, dtype="float32", apply_b_dec_to_input="yes")
    _fails(folder, "apply_b_dec_to_input must be true or false")


def test_unknown_architecture(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, architecture="gated")
    _fails(folder, "unknown SAE architecture 'gated' (known: jumprelu, standard, topk)")


def test_topk_without_k(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae, "topk")
    _edit_cfg(folder, k=...)
    _fails(folder, "architecture 'topk' needs `k`")


def test_unsupported_normalization(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, normalize_activations="expected_average_only_in")
    message = _fails(folder, "normalize_activations 'expected_average_only_in' is not supported")
    assert "(only 'none')" in message


def test_unsupported_reshape(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, reshape_activations="hook_z")
    _fails(folder, "reshape_activations 'hook_z' is not supported")


def test_weights_missing(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    (folder / "sae_weights.safetensors").unlink()
    _fails(folder, "weights file sae_weights.safetensors is missing", cfg_only=False)
    read_sae_config(folder)  # the config alone is still readable


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_weights_corrupt(tmp_path, make_sae, damage):
    folder = _good(tmp_path, make_sae)
    file = folder / "sae_weights.safetensors"
    data = file.read_bytes()
    file.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"nonsense" * 9, "empty": b""}[damage]
    )
    message = _fails(folder, "not a readable safetensors file", cfg_only=False)
    assert str(file) in message


def test_tensor_missing(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae, "jumprelu")
    _edit_weights(folder, drop=["threshold"])
    _fails(
        folder, "tensor 'threshold' is missing (has: W_dec, W_enc, b_dec, b_enc)", cfg_only=False
    )


def test_tensor_shape_mismatch(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_weights(folder, W_enc=torch.zeros(16, 100))
    _fails(
        folder,
        "W_enc has shape [16, 100], cfg.json says d_in=16, d_sae=64 (expected [16, 64])",
        cfg_only=False,
    )


def test_unexpected_tensor(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_weights(folder, W_skip=torch.zeros(16, 16))
    _fails(folder, "unexpected tensors: W_skip", cfg_only=False)


def test_real_scaling_factor_refused(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_weights(folder, scaling_factor=torch.full((64,), 2.0))
    _fails(folder, "unexpected tensors: scaling_factor", cfg_only=False)


def _sparsify(tmp_path, **cfg):
    folder = tmp_path / "layers.2"
    folder.mkdir()
    base = {"activation": "topk", "num_latents": 8, "k": 2, "d_in": 4}
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return folder


def test_sparsify_unsupported(tmp_path):
    _fails(_sparsify(tmp_path, activation="groupmax"), "activation 'groupmax' is not supported")


def test_sparsify_transcoder(tmp_path):
    _fails(_sparsify(tmp_path, transcode=True), "transcode True is not supported")


def test_sparsify_shape_and_missing(tmp_path):
    folder = _sparsify(tmp_path)
    _fails(folder, "weights file sae.safetensors is missing", cfg_only=False)
    tensors = {
        "encoder.weight": torch.zeros(8, 5),
        "encoder.bias": torch.zeros(8),
        "W_dec": torch.zeros(8, 4),
        "b_dec": torch.zeros(4),
    }
    safetensors.torch.save_file(tensors, folder / "sae.safetensors")
    _fails(
        folder,
        "encoder.weight has shape [8, 5], cfg.json says d_in=4, num_latents=8",
        cfg_only=False,
    )
    tensors["encoder.weight"] = torch.zeros(8, 4)
    del tensors["W_dec"]
    safetensors.torch.save_file(tensors, folder / "sae.safetensors")
    _fails(folder, "tensor 'W_dec' is missing", cfg_only=False)
