"""dictionary_learning folders (``ae.pt`` + ``config.json``), read as SAELens 6.54's
``dictionary_learning_1`` loader reads them: every dict_class it maps, each fixture in the
class's own tensor names, put into an offline Hugging Face cache, loaded by SAELens's loader,
built into its SAE the way ``SAE.from_pretrained_with_cfg_and_sparsity`` does, and compared."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch
import torch
from support.hf_cache import populate_hf_cache
from support.pickled import Stowaway
from support.sae_files import load_error
from support.saelens_peer import assert_same_sae, saelens_peer, seeded_inputs

from steer.sae import load_sae, read_sae_config
from steer.sae.families import dictionary_learning, family_for

pytest.importorskip("sae_lens")

D_IN, D_SAE, K = 16, 64, 8
REPO = "canrager/lm_sae"
FOLDER = "pythia70m_sweep_x_ctx128_0730/resid_post_layer_3/trainer_0"


def _rand(gen, *shape, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=gen) * scale + shift


def state_dict(dict_class: str) -> dict[str, torch.Tensor]:
    """Seeded weights under the tensor names ``dict_class`` saves (its state_dict)."""
    g = torch.Generator().manual_seed(0)
    enc_w = _rand(g, D_SAE, D_IN, scale=0.4)  # nn.Linear layout [d_sae, d_in]
    dec_w = _rand(g, D_IN, D_SAE, scale=0.2)
    b_enc, b_dec = _rand(g, D_SAE, scale=0.3, shift=-0.2), _rand(g, D_IN, scale=0.1)
    if dict_class == "AutoEncoder":
        return {"bias": b_dec, "encoder.weight": enc_w, "encoder.bias": b_enc,
                "decoder.weight": dec_w}  # fmt: skip
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        threshold = torch.tensor(-1.0 if dict_class == "AutoEncoderTopK" else 0.4)
        return {"k": torch.tensor(K), "threshold": threshold, "encoder.weight": enc_w,
                "encoder.bias": b_enc, "decoder.weight": dec_w, "b_dec": b_dec}  # fmt: skip
    if dict_class == "GatedAutoEncoder":
        return {"decoder_bias": b_dec, "encoder.weight": enc_w, "gate_bias": b_enc,
                "r_mag": _rand(g, D_SAE, scale=0.3), "mag_bias": _rand(g, D_SAE, scale=0.3),
                "decoder.weight": dec_w}  # fmt: skip
    if dict_class == "JumpReluAutoEncoder":
        return {"W_enc": enc_w.T.contiguous(), "b_enc": b_enc, "W_dec": dec_w.T.contiguous(),
                "b_dec": b_dec, "threshold": _rand(g, D_SAE, scale=0.2).abs()}  # fmt: skip
    assert dict_class == "MatryoshkaBatchTopKSAE"
    return {"k": torch.tensor(K), "threshold": torch.tensor(0.3),
            "group_sizes": torch.tensor([16, 48]), "W_enc": enc_w.T.contiguous(), "b_enc": b_enc,
            "W_dec": dec_w.T.contiguous(), "b_dec": b_dec}  # fmt: skip


def write_folder(folder, dict_class, *, tensors=None, **trainer_changes):
    """A trainer folder as in canrager/lm_sae: ae.pt (torch.save of the state dict) and the
    config.json dictionary_learning writes."""
    trainer = {
        "dict_class": dict_class, "trainer_class": "TrainerX", "activation_dim": D_IN,
        "dict_size": D_SAE, "k": K, "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped",
        "submodule_name": "resid_post_layer_3", "lr": 0.0003, "seed": 0,
    }  # fmt: skip
    trainer.update(trainer_changes)
    config = {"trainer": trainer, "buffer": {"d_submodule": D_IN, "io": "out", "ctx_len": 128}}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state_dict(dict_class) if tensors is None else tensors, folder / "ae.pt")
    return folder


EXPECTED = {  # dict_class -> (architecture, apply_b_dec_to_input)
    "AutoEncoder": ("standard", True),
    "AutoEncoderTopK": ("topk", True),
    "GatedAutoEncoder": ("gated", True),
    "JumpReluAutoEncoder": ("jumprelu", False),
    "BatchTopKSAE": ("jumprelu", True),
    "MatryoshkaBatchTopKSAE": ("jumprelu", True),
}


@pytest.mark.parametrize("dict_class", list(EXPECTED))
def test_every_dict_class_matches_saelens(tmp_path, cache, dict_class):
    src = write_folder(tmp_path / "src", dict_class)
    snapshot = populate_hf_cache(cache, REPO, {
        f"{FOLDER}/ae.pt": src / "ae.pt", f"{FOLDER}/config.json": src / "config.json"
    })  # fmt: skip
    theirs, _ = saelens_peer("dictionary_learning_1", REPO, FOLDER)
    x = seeded_inputs(D_IN)
    copy = shutil.copytree(src, tmp_path / "copy")
    for path in (snapshot / FOLDER, copy, copy / "ae.pt"):
        ours = load_sae(path, overrides={"repo_id": REPO})
        cfg = ours.cfg
        assert (cfg.architecture, cfg.apply_b_dec_to_input) == EXPECTED[dict_class]
        assert (cfg.d_in, cfg.d_sae, cfg.dtype) == (D_IN, D_SAE, "float32")
        assert (cfg.hook_name, cfg.layer, cfg.model_name) == (
            "blocks.3.hook_resid_post", 3, "pythia-70m-deduped"
        )  # fmt: skip
        assert cfg.k == (K if dict_class == "AutoEncoderTopK" else None)
        assert cfg.metadata["dict_class"] == dict_class and cfg.metadata["context_size"] == 128
        feats = assert_same_sae(ours, theirs, x)  # the same weights and formulas
    assert 0.05 < (feats > 0).float().mean().item() < 0.95  # some features on, some off


def test_batch_top_k_threshold_is_every_feature_s(tmp_path):
    ours = load_sae(write_folder(tmp_path / "f", "BatchTopKSAE"))
    assert torch.equal(ours.threshold, torch.full((D_SAE,), 0.4))
    x = seeded_inputs(D_IN)
    with torch.no_grad():
        pre = ours.pre_acts(x)
        assert torch.equal(ours.encode(x), pre * (pre > 0.4))


def test_attention_and_mlp_submodules_keep_their_site(tmp_path):
    cfg = read_sae_config(
        write_folder(tmp_path / "a", "AutoEncoder", layer=2, submodule_name="attn_out_layer_2")
    )
    assert cfg.hook_name == "blocks.2.hook_attn_out" and cfg.layer is None
    cfg = read_sae_config(
        write_folder(tmp_path / "m", "AutoEncoder", layer=2, submodule_name="mlp_out_layer_2")
    )
    assert cfg.hook_name == "blocks.2.hook_mlp_out"


def test_pickled_file_is_refused_and_its_conversion_loads(tmp_path):
    folder = write_folder(tmp_path / "f", "AutoEncoder")
    tensors = state_dict("AutoEncoder")
    torch.save({**tensors, "trainer": Stowaway()}, folder / "ae.pt")
    msg = load_error(folder, "steer never unpickles")
    assert "ae.pt" in msg and "ae.safetensors" in msg and "safetensors.torch" in msg
    # What the hint's command writes: the tensors, as safetensors (the object left behind).
    safetensors.torch.save_file(tensors, str(folder / "ae.safetensors"))
    assert family_for(folder / "ae.safetensors") is dictionary_learning
    for path in (folder, folder / "ae.safetensors"):  # the converted file wins over ae.pt
        loaded = load_sae(path)
        assert torch.equal(loaded.W_enc, tensors["encoder.weight"].T)
        assert torch.equal(loaded.b_dec, tensors["bias"])


def test_bad_folders(tmp_path):
    folder = write_folder(tmp_path / "a", "CrossCoder", tensors=state_dict("AutoEncoder"))
    msg = load_error(folder, "dict_class 'CrossCoder'")
    assert "config.json" in msg and "AutoEncoderTopK" in msg
    bad = state_dict("AutoEncoder")
    del bad["bias"]
    load_error(write_folder(tmp_path / "b", "AutoEncoder", tensors=bad), "'bias' .*is missing")
    bad = state_dict("GatedAutoEncoder")
    del bad["encoder.weight"]
    load_error(
        write_folder(tmp_path / "c", "GatedAutoEncoder", tensors=bad),
        "ae.pt: tensor 'encoder.weight' is missing",
    )
    bad = state_dict("AutoEncoder")
    bad["encoder.bias"] = bad["encoder.bias"][:-1]
    load_error(write_folder(tmp_path / "d", "AutoEncoder", tensors=bad), r"b_enc has shape \[63\]")
    load_error(
        write_folder(tmp_path / "e", "AutoEncoder", activation_dim=32),
        "trainer.activation_dim is 32, but the weights are d_in=16",
    )
    folder = write_folder(tmp_path / "f", "AutoEncoder")
    (folder / "ae.pt").write_bytes((folder / "ae.pt").read_bytes()[:200])
    load_error(folder, "ae.pt: not a readable PyTorch file")
    folder = write_folder(tmp_path / "g", "AutoEncoder")
    (folder / "config.json").unlink()
    load_error(folder, "config.json is missing")
    folder = write_folder(tmp_path / "h", "AutoEncoder")
    (folder / "config.json").write_text('{"buffer": {}}')
    load_error(folder, "needs a 'trainer' section")


def test_matches_only_ae_files(tmp_path):
    folder = write_folder(tmp_path / "f", "AutoEncoder")
    assert dictionary_learning.matches(folder) and dictionary_learning.matches(folder / "ae.pt")
    assert not dictionary_learning.matches(folder / "config.json")
    assert not dictionary_learning.matches(tmp_path)
    assert family_for(folder) is dictionary_learning
