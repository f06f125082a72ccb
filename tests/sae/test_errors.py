"""Every broken SAE folder gives one line naming the path and what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from support.cli_helpers import assert_one_line_error, call

from steer.errors import SteerError
from steer.plugins.hookspecs import hookimpl
from steer.plugins.manager import get_plugin_manager
from steer.sae import SAE, SAEConfig, load_sae, read_sae_config, save_sae


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
    _edit_cfg(folder, architecture="matryoshka")
    _fails(folder, "unknown SAE architecture 'matryoshka' (known: gated, jumprelu,")


def test_topk_without_k(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae, "topk")
    _edit_cfg(folder, k=...)
    _fails(folder, "architecture 'topk' needs `k`")


def test_unsupported_normalization(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, normalize_activations="expected_average_only_in")
    message = _fails(folder, "'expected_average_only_in' needs norm_scaling_factor")
    assert "name the SAE by `release:` + `sae_id:`" in message
    _edit_cfg(folder, normalize_activations="covariance_whitening")
    _fails(folder, "normalize_activations 'covariance_whitening' is not supported: SAELens folds")
    _edit_cfg(folder, normalize_activations="rms")
    _fails(folder, "normalize_activations 'rms' is not a SAELens mode")


def test_unsupported_reshape(tmp_path, make_sae):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, reshape_activations="heads")
    _fails(folder, "reshape_activations 'heads' is not supported (only 'none' and 'hook_z')")


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


def test_sparsify_skip_connection_without_transcode(tmp_path):
    folder = _sparsify(tmp_path, skip_connection=True)
    _fails(folder, "skip_connection True is not supported on an autoencoder (only on a transcoder)")


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


_SPARSIFY_SHAPES = {"encoder.weight": (8, 4), "encoder.bias": (8,), "W_dec": (8, 4), "b_dec": (4,)}


def _sparsify_weights(folder, **replace):
    """A complete sae.safetensors for ``_sparsify``; random weights but for ``replace``."""
    tensors = {name: torch.randn(shape) for name, shape in _SPARSIFY_SHAPES.items()}
    safetensors.torch.save_file({**tensors, **replace}, folder / "sae.safetensors")
    return folder


# --- sizes a cfg.json claims: refused from the weights file's size, before any allocation ---


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"d_sae": 10**12},
            "d_sae 1000000000000 is too large: the weights would take at least 32 TB, "
            "but sae_weights.safetensors is only ",
        ),
        ({"d_in": 10**12}, "d_in 1000000000000 is too large"),
        ({"d_in": 200, "d_sae": 200}, "d_in 200 and d_sae 200 are too large"),
        ({"d_sae": 0}, "d_sae must be a positive integer, got 0"),
        ({"d_in": -3}, "d_in must be a positive integer, got -3"),
    ],
)
def test_absurd_sizes(tmp_path, make_sae, changes, needle):
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, **changes)
    _fails(folder, needle)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"num_latents": 10**12}, "num_latents 1000000000000 is too large"),
        ({"num_latents": 0, "expansion_factor": 10**9}, "(d_in * expansion_factor) 4000000000 is"),
        ({"num_latents": -8}, "num_latents must be a positive integer (or 0), got -8"),
        ({"num_latents": 0, "expansion_factor": 0}, "expansion_factor must be a positive"),
        ({"d_in": 0}, "d_in must be a positive integer, got 0"),
    ],
)
def test_sparsify_absurd_sizes(tmp_path, cfg, needle):
    _fails(_sparsify_weights(_sparsify(tmp_path, **cfg)), needle)


# Loads SAEs with the address space capped at 1 GiB above what torch and steer take: a
# cfg.json whose sizes get allocated before the weights file is checked dies in the allocator
# (an internal error), where the check must give the one-line SteerError.
_CAPPED = """
import resource, sys
import torch
from steer.errors import SteerError
from steer.sae import load_sae
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
for path in sys.argv[1:]:
    try:
        load_sae(path)
        print("loaded")
    except SteerError as exc:
        print("SteerError", exc)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="caps the address space through /proc")
def test_huge_sizes_allocate_nothing(tmp_path, make_sae):
    ok = _good(tmp_path / "ok", make_sae)
    huge = _good(tmp_path / "huge", make_sae, "jumprelu")
    _edit_cfg(huge, d_sae=10**9)  # 64 GB of float32 W_enc alone
    sparsify = _sparsify_weights(_sparsify(tmp_path, num_latents=10**9))
    argv = [sys.executable, "-c", _CAPPED, str(ok), str(huge), str(sparsify)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "loaded"  # the cap leaves room for a real SAE
    assert lines[1].startswith(f"SteerError {huge / 'cfg.json'}: d_sae 1000000000 is too large")
    assert "num_latents 1000000000 is too large" in lines[2]


@pytest.mark.parametrize(
    ("arch", "name"),
    [("standard", "W_enc"), ("topk", "W_dec"), ("jumprelu", "threshold"), ("jumprelu", "b_enc")],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(tmp_path, make_sae, arch, name, bad):
    folder = _good(tmp_path, make_sae, arch)
    tensor = safetensors.torch.load_file(folder / "sae_weights.safetensors")[name]
    tensor.view(-1)[[0, 5, 7]] = bad
    _edit_weights(folder, **{name: tensor})
    message = _fails(folder, f"{name} holds 3 NaN/inf values", cfg_only=False)
    assert message.startswith(str(folder / "sae_weights.safetensors"))


def test_weights_that_overflow_the_cfg_dtype(tmp_path, make_sae):
    # Stored float32, computed float16: 1e6 does not fit and would become inf.
    folder = _good(tmp_path, make_sae)
    _edit_cfg(folder, dtype="float16")
    _edit_weights(folder, b_dec=torch.zeros(16).index_fill(0, torch.tensor([3]), 1e6))
    _fails(folder, "b_dec holds 1 NaN/inf values once cast to float16", cfg_only=False)


@pytest.mark.parametrize("name", ["encoder.weight", "encoder.bias", "W_dec", "b_dec"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sparsify_non_finite_weights(tmp_path, name, bad):
    tensor = torch.ones(_SPARSIFY_SHAPES[name])
    tensor.view(-1)[[1, 2]] = bad
    folder = _sparsify_weights(_sparsify(tmp_path), **{name: tensor})
    _fails(folder, f"{name} holds 2 NaN/inf values", cfg_only=False)


# --- the same lines through the CLI ---


@pytest.mark.parametrize(
    ("command", "damage"), [("check", "huge"), ("run", "huge"), ("run", "nan")]
)
def test_cli(tmp_path, make_sae, capsys, monkeypatch, command, damage):
    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))
    folder = _good(tmp_path, make_sae)
    if damage == "huge":
        _edit_cfg(folder, d_sae=10**12)
        where, needle = folder / "cfg.json", "d_sae 1000000000000 is too large"
    else:
        _edit_weights(folder, W_dec=torch.zeros(64, 16).index_fill(1, torch.tensor([3]), torch.nan))
        where, needle = folder / "sae_weights.safetensors", "W_dec holds 64 NaN/inf values"
    recipe = tmp_path / "recipe.yaml"
    steps = [{"plugin": "clamp", "sae": "res", "features": [3], "value": 5.0}]
    saes = [{"id": "res", "path": str(folder)}]
    recipe.write_text(json.dumps({"saes": saes, "prompts": ["Hi"], "interventions": steps}))
    code, out, err = call([command, str(recipe)], capsys)
    assert_one_line_error(code, err, str(where), needle)
    assert out == ""
    assert not (tmp_path / "cache").exists()  # failed before the model was loaded


# --- load_sae builds the module on the meta device: plugin architectures that keep more than
# the file holds, or compute on their tensors in __init__, must still load as they did ---


class _ScaledSAE(SAE):
    """A non-persistent buffer and a tensor computed in __init__, neither in the file."""

    architecture = "scaled"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.register_buffer("gain", torch.full((cfg.d_sae,), 2.0), persistent=False)
        self.offset = torch.ones(cfg.d_in)

    def activation(self, pre):
        return torch.relu(pre) * self.gain


class _ItemSAE(_ScaledSAE):
    """An __init__ that cannot run on the meta device at all."""

    architecture = "scaled-item"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.norm = torch.ones(3).sum().item()


class _ScaledPlugin:
    @hookimpl
    def steer_register_sae_architectures(self, register):
        register(_ScaledSAE)
        register(_ItemSAE)


@pytest.mark.parametrize("cls", [_ScaledSAE, _ItemSAE])
def test_plugin_state_outside_the_file_is_built(tmp_path, cls):
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(_ScaledPlugin(), name="scaled")
    sae = cls(SAEConfig(architecture=cls.architecture, d_in=16, d_sae=64))
    with torch.no_grad():
        sae.W_enc.normal_()
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae", pm=pm)
    assert torch.equal(loaded.gain, torch.full((64,), 2.0))
    assert torch.equal(loaded.offset, torch.ones(16))
    x = torch.randn(2, 16)
    assert torch.equal(loaded.W_enc, sae.W_enc) and torch.equal(loaded.encode(x), sae.encode(x))
