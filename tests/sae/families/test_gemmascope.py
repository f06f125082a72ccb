"""GemmaScope (Gemma 2) ``params.npz`` SAEs and transcoders: the configs SAELens's ``gemma_2``
loaders build, and the same features and reconstructions as SAELens's own loaders give for the
same files in an offline Hugging Face cache."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
import torch
from support.hf_cache import offline_cache_env, populate_hf_cache
from support.sae_files import write_npz
from support.saelens_peer import assert_same_outputs, saelens_sae

from steer.errors import SteerError
from steer.model.sites import Hook, hook_of
from steer.sae import families as families_pkg
from steer.sae import load_sae, read_sae_config
from steer.sae.families import common, gemmascope

loaders = pytest.importorskip("sae_lens.loading.pretrained_sae_loaders")

D_IN, D_SAE = 16, 64
X = torch.randn(8, D_IN, generator=torch.Generator().manual_seed(1))


def in_cache(tmp_path, monkeypatch, repo_id, folder, **npz):
    """The snapshot folder of ``folder`` (holding a fresh params.npz) in an offline cache."""
    source = write_npz(tmp_path / "src" / "params.npz", **npz)
    snapshot = populate_hf_cache(tmp_path / "hub", repo_id, {f"{folder}/params.npz": source})
    offline_cache_env(monkeypatch, tmp_path / "hub")
    return snapshot / folder


SAE_CASES = {
    "res": ("google/gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71", "blocks.20.hook_resid_post", "gemma-2-2b"),
    "embedding": ("google/gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6", "hook_embed", "gemma-2-2b"),
    "mlp-9b": ("google/gemma-scope-9b-pt-mlp", "layer_0/width_16k/average_l0_6", "blocks.0.hook_mlp_out", "gemma-2-9b"),
    "res-27b": ("google/gemma-scope-27b-pt-res", "layer_10/width_131k/average_l0_106", "blocks.10.hook_resid_post", "gemma-2-27b"),
    "res-9b-it": ("google/gemma-scope-9b-it-res", "layer_9/width_16k/average_l0_88", "blocks.9.hook_resid_post", "gemma-2-9b-it"),
}  # fmt: skip


@pytest.mark.parametrize("case", SAE_CASES)
def test_sae_matches_saelens(tmp_path, monkeypatch, case):
    repo_id, folder, hook, model = SAE_CASES[case]
    sae_dir = in_cache(tmp_path, monkeypatch, repo_id, folder)
    cfg_dict, state, _ = loaders.gemma_2_sae_huggingface_loader(
        repo_id, folder, device="cpu", cfg_overrides={"d_in": D_IN, "d_sae": D_SAE}
    )
    theirs = saelens_sae(cfg_dict, state)
    assert theirs.cfg.metadata.hook_name == hook
    for path in (sae_dir, sae_dir / "params.npz"):
        ours = load_sae(path)
        assert (ours.cfg.architecture, ours.cfg.hook_name, ours.cfg.model_name) == (
            "jumprelu",
            hook,
            model,
        )
        assert ours.cfg.apply_b_dec_to_input is False and ours.cfg.d_out is None
        assert ours.cfg.metadata["repo_id"] == repo_id
        assert ours.cfg.metadata["folder"] == folder
        assert_same_outputs(ours, theirs, X)
    # A plain copy keeps the numbers when its folders keep the repo's names (an embedding
    # SAE is rescaled because its folder says "embedding").
    copy = shutil.copytree(sae_dir, tmp_path / "copy" / folder)
    ours = load_sae(copy)
    assert "repo_id" not in ours.cfg.metadata and ours.cfg.model_name is None
    assert_same_outputs(ours, theirs, X)


def test_embedding_sae_is_rescaled_by_sqrt_d_in(tmp_path, monkeypatch):
    folder = "embedding/width_4k/average_l0_6"
    sae_dir = in_cache(tmp_path, monkeypatch, "google/gemma-scope-2b-pt-res", folder)
    with np.load(sae_dir / "params.npz") as raw:
        w_enc, w_dec = raw["W_enc"], raw["W_dec"]
    sae = load_sae(sae_dir)
    torch.testing.assert_close(sae.W_enc, torch.tensor(w_enc) / 4.0)  # sqrt(16)
    torch.testing.assert_close(sae.W_dec, torch.tensor(w_dec) * 4.0)
    assert sae.cfg.layer is None  # hook_embed is no block's output


def test_transcoder_matches_saelens(tmp_path, monkeypatch):
    repo_id, folder = "google/gemma-scope-2b-pt-transcoders", "layer_5/width_16k/average_l0_76"
    sae_dir = in_cache(tmp_path, monkeypatch, repo_id, folder)
    cfg_dict, state, _ = loaders.gemma_2_transcoder_huggingface_loader(
        repo_id, folder, device="cpu", cfg_overrides={"d_in": D_IN, "d_sae": D_SAE, "d_out": D_IN}
    )
    theirs = saelens_sae(cfg_dict, state)
    ours = load_sae(sae_dir)
    cfg = ours.cfg
    assert (cfg.architecture, cfg.d_out, cfg.model_name) == (
        "jumprelu_transcoder",
        16,
        "gemma-2-2b",
    )
    assert cfg.hook_name == "blocks.5.ln2.hook_normalized" == theirs.cfg.metadata.hook_name
    assert cfg.hook_name_out == "blocks.5.hook_mlp_out" == theirs.cfg.metadata.hook_name_out
    assert_same_outputs(ours, theirs, X)


def test_lower_case_keys_are_renamed_as_saelens_does(tmp_path, monkeypatch):
    repo_id, folder = "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_50"
    keys = {"W_enc": "w_enc", "W_dec": "w_dec"}
    sae_dir = in_cache(tmp_path, monkeypatch, repo_id, folder, keys=keys)
    cfg_dict, state, _ = loaders.gemma_2_sae_huggingface_loader(
        repo_id, folder, device="cpu", cfg_overrides={"d_in": D_IN, "d_sae": D_SAE}
    )
    assert_same_outputs(load_sae(sae_dir), saelens_sae(cfg_dict, state), X)


def test_all_ones_scaling_factor_is_dropped_and_any_other_refused(tmp_path, monkeypatch):
    repo_id, folder = "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_50"
    ones = {"scaling_factor": np.ones(D_SAE)}
    sae_dir = in_cache(tmp_path, monkeypatch, repo_id, folder, extra=ones)
    cfg_dict, state, _ = loaders.gemma_2_sae_huggingface_loader(
        repo_id, folder, device="cpu", cfg_overrides={"d_in": D_IN, "d_sae": D_SAE}
    )
    assert_same_outputs(load_sae(sae_dir), saelens_sae(cfg_dict, state), X)

    write_npz(tmp_path / "other" / "params.npz", extra={"scaling_factor": np.full(D_SAE, 2.0)})
    with pytest.raises(SteerError, match="scaling_factor is not all ones") as err:
        load_sae(tmp_path / "other")
    assert "\n" not in str(err.value) and str(tmp_path / "other" / "params.npz") in str(err.value)


# Real (repo, folder) pairs from SAELens's pretrained_saes.yaml, with real sizes: what steer
# derives must be what SAELens's config functions derive.
NAME_CASES = [
    ("google/gemma-scope-2b-pt-res", "layer_25/width_65k/average_l0_93", 2304, 65536, False),
    ("google/gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_44", 2304, 4096, False),
    ("google/gemma-scope-2b-pt-mlp", "layer_0/width_16k/average_l0_119", 2304, 16384, False),
    ("google/gemma-scope-2b-pt-att", "layer_0/width_16k/average_l0_104", 2048, 16384, False),
    ("google/gemma-scope-9b-pt-att", "layer_41/width_131k/average_l0_92", 4096, 131072, False),
    ("google/gemma-scope-9b-pt-res", "layer_9/width_1m/average_l0_9", 3584, 1048576, False),
    ("google/gemma-scope-9b-it-res", "layer_31/width_131k/average_l0_109", 3584, 131072, False),
    ("google/gemma-scope-27b-pt-res", "layer_34/width_131k/average_l0_72", 4608, 131072, False),
    ("google/gemma-scope-2b-pt-transcoders", "layer_25/width_16k/average_l0_41", 2304, 16384, True),
]


@pytest.mark.parametrize(("repo_id", "folder", "d_in", "d_sae", "transcoder"), NAME_CASES)
def test_names_give_saelens_config(repo_id, folder, d_in, d_sae, transcoder):
    getter = (
        loaders.get_gemma_2_transcoder_config_from_hf
        if transcoder
        else loaders.get_gemma_2_config_from_hf
    )
    theirs = loaders.handle_config_defaulting(getter(repo_id, folder, "cpu"))
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in)}
    ours = gemmascope.saelens_cfg(repo_id, folder, shapes, transcoder=transcoder)
    keys = ("architecture", "d_in", "d_sae", "d_out", "reshape_activations")
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}
    meta = ("model_name", "hook_name", "hook_name_out")
    assert {k: ours["metadata"].get(k) for k in meta} == {
        k: theirs["metadata"].get(k) for k in meta
    }
    cfg = common.family_config(ours, {}, "x")  # attention SAEs too: they read steer's z site
    assert (cfg.hook_name, cfg.hook_name_out) == (
        theirs["metadata"]["hook_name"],
        theirs["metadata"].get("hook_name_out"),
    )


def test_attention_sae_reads_the_heads_outputs(tmp_path):
    file = write_npz(
        tmp_path / "gemma-scope-2b-pt-att" / "layer_3/width_16k/average_l0_9/params.npz"
    )
    cfg = read_sae_config(file.parent)
    assert cfg.hook_name == "blocks.3.attn.hook_z"
    assert hook_of(cfg.hook_name, cfg.hf_hook_name) == Hook.at("z", 3)


def test_site_and_model_from_the_path_or_hints(tmp_path):
    folder = "layer_3/width_16k/average_l0_10"
    cached = tmp_path / "hub/models--google--gemma-scope-9b-pt-mlp/snapshots/c0ffee" / folder
    release = tmp_path / "saes/gemma-scope-9b-it-res-canonical" / folder
    plain = tmp_path / "my-sae"
    for path in (cached, release, plain):
        write_npz(path / "params.npz")
    cfg = read_sae_config(cached)
    assert (cfg.hook_name, cfg.model_name, cfg.layer) == (
        "blocks.3.hook_mlp_out",
        "gemma-2-9b",
        None,
    )
    assert cfg.metadata["repo_id"] == "google/gemma-scope-9b-pt-mlp"
    cfg = read_sae_config(release / "params.npz")
    assert (cfg.hook_name, cfg.model_name, cfg.layer) == (
        "blocks.3.hook_resid_post",
        "gemma-2-9b-it",
        3,
    )
    assert "repo_id" not in cfg.metadata  # a folder's name is no proof of the repo
    cfg = read_sae_config(plain)
    assert (cfg.hook_name, cfg.model_name, cfg.architecture) == (None, None, "jumprelu")
    # What steer's release resolver passes: the repo (a hint) and the release's names.
    hints = {"repo_id": "google/gemma-scope-2b-pt-transcoders", "folder": folder}
    release = {"release": "gemma-scope-2b-pt-transcoders", "sae_id": folder}
    cfg = read_sae_config(plain, overrides={**hints, **release})
    assert (cfg.architecture, cfg.hook_name_out) == ("jumprelu_transcoder", "blocks.3.hook_mlp_out")
    assert cfg.metadata["repo_id"] == hints["repo_id"] and cfg.metadata["folder"] == folder
    assert cfg.metadata["release"] == release["release"] and cfg.metadata["sae_id"] == folder
    # The release list's SAELens keys win over what the names say.
    cfg = read_sae_config(plain, overrides={"hook_name": "blocks.7.hook_resid_post"})
    assert cfg.layer == 7


def _bad_npz(tmp_path, kind):
    file = tmp_path / "sae" / "params.npz"
    file.parent.mkdir(parents=True)
    if kind == "missing threshold":
        write_npz(file, drop=("threshold",))
    elif kind == "not a zip":
        file.write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    elif kind == "truncated":
        write_npz(file)
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    elif kind == "array data cut short":
        write_npz(tmp_path / "whole.npz")
        with np.load(tmp_path / "whole.npz") as whole, zipfile.ZipFile(file, "w") as archive:
            for key in whole.files:
                buffer = io.BytesIO()
                np.save(buffer, whole[key])
                data = buffer.getvalue()  # W_enc's header says [16, 64]; half its data is there
                archive.writestr(f"{key}.npy", data[: len(data) // 2] if key == "W_enc" else data)
    elif kind == "integer array":
        write_npz(file, dtype=np.int32)
    elif kind == "unexpected array":
        write_npz(file, extra={"W_skip": np.zeros((D_IN, D_IN))})
    return file


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing threshold", "tensor 'threshold' is missing"),
        ("not a zip", "not a readable .npz file"),
        ("truncated", "not a readable .npz file"),
        ("array data cut short", "not a readable .npz file"),
        ("integer array", "not a float dtype"),
        ("unexpected array", "unexpected array 'W_skip'"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, kind, message):
    file = _bad_npz(tmp_path, kind)
    for call in (read_sae_config, load_sae):
        with pytest.raises(SteerError, match=message) as err:
            call(file.parent)
        assert "\n" not in str(err.value) and str(file) in str(err.value)


def test_wrong_shapes_are_refused(tmp_path):
    write_npz(tmp_path / "sae" / "params.npz", extra={"b_enc": np.zeros(D_SAE - 1)})
    with pytest.raises(SteerError, match=r"b_enc has shape \[63\]") as err:
        load_sae(tmp_path / "sae")
    assert "\n" not in str(err.value) and str(tmp_path / "sae") in str(err.value)
    write_npz(tmp_path / "flat" / "params.npz", extra={"W_enc": np.zeros(D_IN * D_SAE)})
    with pytest.raises(SteerError, match=r"W_enc has shape \[1024\], not 2-D"):
        read_sae_config(tmp_path / "flat")


def test_matches_by_names_only(tmp_path):
    file = write_npz(tmp_path / "sae" / "params.npz")
    assert gemmascope.matches(file) and gemmascope.matches(file.parent)
    assert not gemmascope.matches(tmp_path) and not gemmascope.matches(tmp_path / "missing.npz")
    assert families_pkg.family_for(file.parent) is gemmascope
