"""Gemma Scope 2 (Gemma 3) ``params.safetensors`` + ``config.json``: the configs SAELens's
``gemma_3`` loader builds, and the same features and reconstructions as SAELens's own loader
gives for the same files in an offline Hugging Face cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from support.hf_cache import offline_cache_env, populate_hf_cache
from support.saelens_peer import assert_same_outputs, saelens_sae

from steer.errors import SteerError
from steer.sae import families as families_pkg
from steer.sae import get_architectures, load_sae, read_sae_config
from steer.sae.configs import safetensors_header
from steer.sae.families import common, gemmascope2
from steer.sae.transcoder import JumpReLUTranscoder

loaders = pytest.importorskip("sae_lens.loading.pretrained_sae_loaders")

D_IN, D_SAE = 16, 64
X = torch.randn(8, D_IN, generator=torch.Generator().manual_seed(1))
REPO = "google/gemma-scope-2-1b-pt"


@pytest.fixture(autouse=True)
def _local_shapes(monkeypatch):
    # SAELens reads the shapes with HTTP range requests; here they come from the cached file.
    def shapes(repo_id, filename):
        file = loaders.hf_hub_download(repo_id, filename)
        header = safetensors_header(Path(file))
        return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}

    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", shapes)


def write_params(file, *, d_out=D_IN, affine=False, drop=(), seed=0):
    """A params.safetensors in Gemma Scope 2's layout (raw names, float32, w_enc [d_in, d_sae],
    the skip matrix [d_in, d_out]) with seeded weights whose thresholds leave some features on
    and some off for randn inputs."""
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "w_enc": torch.randn(D_IN, D_SAE, generator=g) / 4,
        "w_dec": torch.randn(D_SAE, d_out, generator=g) / 4,
        "b_enc": torch.randn(D_SAE, generator=g) / 10,
        "b_dec": torch.randn(d_out, generator=g) / 10,
        "threshold": torch.randn(D_SAE, generator=g).abs() / 2 + 0.05,
    }
    if affine:
        tensors["affine_skip_connection"] = torch.randn(D_IN, d_out, generator=g) / 4
    file.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v for k, v in tensors.items() if k not in drop}, str(file))
    return file


def config_json(layer, site, *, affine=False, model="gemma-v3-1b-pt"):
    """A config.json with the real files' keys (SAELens reads architecture, model_name,
    hf_hook_point_in/_out and affine_connection)."""
    hf_in, hf_out = {
        "resid_post": ("model.layers.{}.output", None),
        "mlp_out": ("model.layers.{}.post_feedforward_layernorm.output", None),
        "attn_out": ("model.layers.{}.self_attn.o_proj.input", None),
        "transcoder": (
            "model.layers.{}.pre_feedforward_layernorm.output",
            "model.layers.{}.post_feedforward_layernorm.output",
        ),
    }[site]
    return {
        "hf_hook_point_in": hf_in.format(layer),
        "hf_hook_point_out": (hf_out or hf_in).format(layer),
        "width": D_SAE,
        "model_name": model,
        "architecture": "jump_relu",
        "l0": 20,
        "affine_connection": affine,
        "type": "transcoder" if site == "transcoder" else "sae",
    }


def in_cache(tmp_path, monkeypatch, folder, config=None, repo_id=REPO, **params):
    """The snapshot folder of ``folder`` (params.safetensors and, unless ``config`` is None,
    config.json) in an offline Hugging Face cache."""
    files = {
        f"{folder}/params.safetensors": write_params(tmp_path / "src/params.safetensors", **params)
    }
    if config is not None:
        files[f"{folder}/config.json"] = json.dumps(config).encode()
    snapshot = populate_hf_cache(tmp_path / "hub", repo_id, files)
    offline_cache_env(monkeypatch, tmp_path / "hub")
    return snapshot / folder


SAE_CASES = {
    "resid_post": ("resid_post/layer_13_width_16k_l0_big", "blocks.13.hook_resid_post", "model.layers.13.output"),
    "mlp_out": ("mlp_out_all/layer_7_width_65k_l0_small", "blocks.7.hook_mlp_out", "model.layers.7.post_feedforward_layernorm.output"),
    "attn_out": ("attn_out/layer_2_width_16k_l0_medium", "blocks.2.attn.hook_z", "model.layers.2.self_attn.o_proj.input"),
}  # fmt: skip


@pytest.mark.parametrize("with_config", [True, False], ids=["config.json", "inferred"])
@pytest.mark.parametrize("case", SAE_CASES)
def test_sae_matches_saelens(tmp_path, monkeypatch, case, with_config):
    folder, hook, hf_hook = SAE_CASES[case]
    layer = int(folder.split("layer_")[1].split("_")[0])
    config = config_json(layer, folder.split("/")[0].removesuffix("_all")) if with_config else None
    sae_dir = in_cache(tmp_path, monkeypatch, folder, config)
    cfg_dict, state, _ = loaders.gemma_3_sae_huggingface_loader(REPO, folder, device="cpu")
    theirs = saelens_sae(cfg_dict, state)
    assert (theirs.cfg.metadata.hook_name, theirs.cfg.metadata.hf_hook_name) == (hook, hf_hook)
    for path in (sae_dir, sae_dir / "params.safetensors"):
        ours = load_sae(path)
        cfg = ours.cfg
        assert (cfg.architecture, cfg.hook_name, cfg.hf_hook_name) == ("jumprelu", hook, hf_hook)
        assert cfg.model_name == theirs.cfg.metadata.model_name == "google/gemma-3-1b-pt"
        assert cfg.metadata["repo_id"] == REPO and cfg.metadata["folder"] == folder
        assert_same_outputs(ours, theirs, X)
    # A plain copy under a name that says nothing: config.json still tells the site and layer.
    ours = load_sae(shutil.copytree(sae_dir, tmp_path / "copy" / "my-sae"))
    assert_same_outputs(ours, theirs, X)
    if with_config:
        assert (ours.cfg.hook_name, ours.cfg.hf_hook_name) == (hook, hf_hook)
        assert ours.cfg.model_name == "google/gemma-3-1b-pt" and "repo_id" not in ours.cfg.metadata
    else:
        assert (ours.cfg.hook_name, ours.cfg.model_name) == (None, None)


@pytest.mark.parametrize("with_config", [True, False], ids=["config.json", "inferred"])
def test_transcoder_matches_saelens(tmp_path, monkeypatch, with_config):
    folder = "transcoder_all/layer_4_width_16k_l0_big"
    config = config_json(4, "transcoder") if with_config else None
    # d_out 12: SAELens and steer take it from w_dec, not from d_in.
    sae_dir = in_cache(tmp_path, monkeypatch, folder, config, d_out=12)
    cfg_dict, state, _ = loaders.gemma_3_sae_huggingface_loader(REPO, folder, device="cpu")
    theirs = saelens_sae(cfg_dict, state)
    ours = load_sae(sae_dir)
    cfg = ours.cfg
    assert (cfg.architecture, cfg.d_in, cfg.d_out) == ("jumprelu_transcoder", D_IN, 12)
    assert cfg.hook_name == "blocks.4.hook_mlp_in" == theirs.cfg.metadata.hook_name
    assert cfg.hook_name_out == "blocks.4.hook_mlp_out" == theirs.cfg.metadata.hook_name_out
    assert cfg.hf_hook_name == "model.layers.4.pre_feedforward_layernorm.output"
    assert cfg.hf_hook_name_out == "model.layers.4.post_feedforward_layernorm.output"
    assert cfg.hf_hook_name_out == theirs.cfg.metadata.hf_hook_name_out
    assert_same_outputs(ours, theirs, X)


class SkipJumpReLUTranscoder(JumpReLUTranscoder):
    """What SAELens's JumpReLUSkipTranscoder computes, on steer's JumpReLU transcoder: the
    reader's tensors are checked against SAELens through it until steer has its own."""

    architecture = "jumprelu_skip_transcoder"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.W_skip = torch.nn.Parameter(torch.zeros(cfg.output_width, cfg.d_in))

    def forward(self, x):
        return super().forward(x) + x @ self.W_skip.T


@pytest.mark.parametrize("with_config", [True, False], ids=["config.json", "inferred"])
def test_affine_transcoder_reads_as_saelens(tmp_path, monkeypatch, with_config):
    folder = "transcoder/layer_9_width_16k_l0_small_affine"
    config = config_json(9, "transcoder", affine=True) if with_config else None
    sae_dir = in_cache(tmp_path, monkeypatch, folder, config, affine=True)
    cfg_dict, state, _ = loaders.gemma_3_sae_huggingface_loader(REPO, folder, device="cpu")
    theirs = saelens_sae(cfg_dict, state)
    cfg = gemmascope2.read_config(sae_dir, {})  # the family's own: steer cannot run it yet
    assert cfg.architecture == cfg_dict["architecture"] == "jumprelu_skip_transcoder"
    tensors = gemmascope2.read_tensors(sae_dir, cfg)
    assert tensors.keys() == state.keys()
    assert all(torch.equal(tensors[k], state[k]) for k in state)  # W_skip: [d_out, d_in]
    assert tensors["W_skip"].shape == (D_IN, D_IN)
    ours = SkipJumpReLUTranscoder(cfg)
    ours.load_state_dict(tensors)
    assert_same_outputs(ours, theirs, X)
    if "jumprelu_skip_transcoder" in get_architectures():
        assert_same_outputs(load_sae(sae_dir), theirs, X)
    else:  # steer has no JumpReLU transcoder with a skip path yet: refused by name
        with pytest.raises(SteerError, match="unknown SAE architecture 'jumprelu_skip_t") as err:
            load_sae(sae_dir)
        assert "\n" not in str(err.value)


# Real (repo, folder) pairs from SAELens's pretrained_saes.yaml with real sizes (d_in, d_sae,
# d_out): what steer derives must be what SAELens's gemma_3 config function derives.
NAME_CASES = [
    ("google/gemma-scope-2-270m-pt", "resid_post/layer_12_width_16k_l0_big", 640, 16384, 640),
    ("google/gemma-scope-2-270m-it", "attn_out_all/layer_9_width_262k_l0_small", 1024, 262144, 640),
    ("google/gemma-scope-2-1b-it", "mlp_out/layer_7_width_65k_l0_small", 1152, 65536, 1152),
    ("google/gemma-scope-2-4b-pt", "transcoder/layer_17_width_16k_l0_big", 2560, 16384, 2560),
    ("google/gemma-scope-2-12b-it", "transcoder_all/layer_0_width_16k_l0_big_affine", 3840, 16384, 3840),
    ("google/gemma-scope-2-27b-pt", "resid_post_all/layer_9_width_262k_l0_small", 5376, 262144, 5376),
]  # fmt: skip


@pytest.mark.parametrize(("repo_id", "folder", "d_in", "d_sae", "d_out"), NAME_CASES)
def test_names_give_saelens_config(tmp_path, monkeypatch, repo_id, folder, d_in, d_sae, d_out):
    offline_cache_env(monkeypatch, tmp_path / "empty")  # no config.json: SAELens infers one
    shapes = {"w_enc": [d_in, d_sae], "w_dec": [d_sae, d_out]}
    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", lambda *_: shapes)
    theirs = loaders.handle_config_defaulting(
        loaders.get_gemma_3_config_from_hf(repo_id, folder, "cpu")
    )
    raw = gemmascope2.inferred_config_json(repo_id, folder)
    ours = gemmascope2.saelens_cfg(folder, raw, shapes, "x")
    keys = ("architecture", "d_in", "d_sae", "d_out", "reshape_activations")
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}
    meta = ("model_name", "hook_name", "hook_name_out", "hf_hook_name", "hf_hook_name_out")
    assert {k: ours["metadata"].get(k) for k in meta} == {
        k: theirs["metadata"].get(k) for k in meta
    }
    cfg = common.family_config(ours, {}, "x")
    assert (cfg.hook_name, cfg.hf_hook_name, cfg.d_out) == (
        theirs["metadata"]["hook_name"],
        theirs["metadata"]["hf_hook_name"],
        theirs.get("d_out"),
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemma-v3-1b-pt", "google/gemma-3-1b-pt"),
        ("gemma-v3-270m-pt", "google/gemma-3-270m"),
        ("google/gemma-3-4b-it", "google/gemma-3-4b-it"),
    ],
)
def test_model_name_is_written_as_saelens_writes_it(tmp_path, name, expected):
    folder = tmp_path / "resid_post" / "layer_3_width_16k_l0_big"
    write_params(folder / "params.safetensors")
    (folder / "config.json").write_text(json.dumps(config_json(3, "resid_post", model=name)))
    assert read_sae_config(folder).model_name == expected


def _bad(tmp_path, kind):
    folder = tmp_path / "resid_post" / "layer_3_width_16k_l0_big"
    drop = {"missing w_enc": ("w_enc",), "missing threshold": ("threshold",)}.get(kind, ())
    file = write_params(folder / "params.safetensors", drop=drop, affine=kind == "stray skip")
    config = config_json(3, "resid_post")
    if kind == "corrupt":
        file.write_bytes(file.read_bytes()[:100])
    elif kind == "bad header":
        file.write_bytes(b"\xff" * 64)
    elif kind == "not jump_relu":
        config["architecture"] = "topk"
    elif kind == "invalid json":
        (folder / "config.json").write_text("{not json")
        return file, folder / "config.json"
    (folder / "config.json").write_text(json.dumps(config))
    where = folder / "config.json" if kind in ("not jump_relu", "stray skip") else file
    return file, where


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing w_enc", "tensor 'w_enc' is missing"),
        ("missing threshold", "tensor 'threshold' is missing"),
        ("corrupt", "not a readable safetensors file"),
        ("bad header", "not a readable safetensors file"),
        ("not jump_relu", "architecture 'topk' is not supported"),
        ("invalid json", "not valid JSON"),
        ("stray skip", "has affine_skip_connection"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, kind, message):
    file, where = _bad(tmp_path, kind)
    for call in (read_sae_config, load_sae):
        with pytest.raises(SteerError, match=message) as err:
            call(file.parent)
        assert "\n" not in str(err.value) and str(where) in str(err.value)


def test_wrong_shapes_and_missing_skip_are_refused(tmp_path):
    folder = tmp_path / "resid_post" / "layer_3_width_16k_l0_big"
    file = write_params(folder / "params.safetensors")
    tensors = safetensors.torch.load_file(str(file))
    tensors["b_enc"] = torch.zeros(D_SAE + 1)
    safetensors.torch.save_file(tensors, str(file))
    with pytest.raises(SteerError, match=r"b_enc has shape \[65\]") as err:
        load_sae(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    affine = tmp_path / "transcoder" / "layer_3_width_16k_l0_big_affine"
    write_params(affine / "params.safetensors")  # affine by its name, but no skip matrix
    with pytest.raises(SteerError, match="has no affine_skip_connection"):
        read_sae_config(affine)


def test_cross_layer_transcoders_are_refused(tmp_path):
    folder = tmp_path / "gemma-scope-2-270m-pt" / "clt" / "layer_3_width_16k_l0_medium"
    write_params(folder / "params.safetensors")
    with pytest.raises(SteerError, match=r"cross-layer transcoders \(clt\)"):
        read_sae_config(folder)


def test_matches_by_names_only(tmp_path):
    file = write_params(tmp_path / "sae" / "params.safetensors")
    assert gemmascope2.matches(file) and gemmascope2.matches(file.parent)
    assert not gemmascope2.matches(tmp_path) and not gemmascope2.matches(tmp_path / "x.npz")
    assert families_pkg.family_for(file.parent) is gemmascope2
