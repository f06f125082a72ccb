"""SAEs named by SAELens release + sae_id, resolved offline (``HF_HUB_OFFLINE=1``) through a
Hugging Face cache folder in huggingface_hub's real layout, with the release list's overrides
applied; unknown names get close matches; the shipped list stands in for sae-lens."""

from __future__ import annotations

import pytest
import torch
from support.cli_helpers import assert_one_line_error, call
from support.hf_cache import offline_cache_env, populate_from_folder
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.model.sites import Hook
from steer.sae import load_sae, save_sae
from steer.sae import releases as releases_module
from steer.sae.releases import fetch_release_sae, find_release
from steer.steering.attach import load_saes
from steer.steering.recipe import parse_recipe

MISTRAL = ("mistral-7b-res-wg", "blocks.8.hook_resid_pre", "JoshEngels/Mistral-7B-Residual-Stream-SAEs", "mistral_7b_layer_8")  # fmt: skip
GPT2 = ("gpt2-small-res-jb", "blocks.8.hook_resid_pre", "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre")  # fmt: skip


@pytest.fixture(params=["installed", "shipped"])
def release_source(request, monkeypatch):
    """Each test runs with sae-lens's own list and with the list steer ships."""
    releases_module.release_list.cache_clear()
    if request.param == "shipped":
        monkeypatch.setattr(releases_module, "installed_list", lambda: None)
    elif releases_module.installed_list() is None:
        pytest.skip("sae-lens is not installed (it is in the test extra)")
    yield request.param
    releases_module.release_list.cache_clear()


def _cached(tmp_path, monkeypatch, release, model, hook):
    """A tiny SAELens-format SAE for ``release`` in an offline cache; its local folder."""
    _, _, repo_id, path = release
    folder = tmp_path / "made"
    sae = make_sae(d_in=16, d_sae=64, seed=2, layer=None, model_name=model, hook_name=hook)
    save_sae(sae, folder)
    cache = tmp_path / "hub"
    populate_from_folder(cache, repo_id, folder, prefix=path)
    offline_cache_env(monkeypatch, cache)
    return folder


def test_release_override_normalises_like_saelens(tmp_path, monkeypatch, release_source):
    folder = _cached(tmp_path, monkeypatch, MISTRAL, "mistral-7b", "blocks.8.hook_resid_pre")
    recipe = parse_recipe(
        {"saes": [{"id": "m", "release": MISTRAL[0], "sae_id": MISTRAL[1]}], "prompts": ["hi"]}
    )
    sae, layer = load_saes(recipe)["m"]
    assert sae.cfg.normalize_activations == "constant_norm_rescale"  # from the release list
    assert layer == Hook.at("resid_pre", 8)  # block 8's input: block 7's output
    assert sae.cfg.layer == 7
    assert sae.cfg.metadata["release"] == MISTRAL[0]
    x = torch.randn(6, 16) * 5
    plain = load_sae(folder)  # the same files without the release's settings
    assert not torch.allclose(sae.encode(x), plain.encode(x), atol=1e-3)
    from sae_lens import SAE as LensSAE

    lens = LensSAE.from_pretrained(MISTRAL[0], MISTRAL[1])  # offline, from the same cache
    assert lens.cfg.normalize_activations == "constant_norm_rescale"
    with torch.no_grad():
        assert torch.equal(sae.encode(x), lens.encode(x))
        assert torch.equal(sae(x), lens(x))


def test_release_centring_reads_the_centred_stream(tmp_path, monkeypatch, release_source):
    _cached(tmp_path, monkeypatch, GPT2, "gpt2-small", "blocks.8.hook_resid_pre")
    found = fetch_release_sae(GPT2[0], GPT2[1], where="saes[0]")
    sae = load_sae(found.path, overrides=found.overrides)
    assert sae.cfg.centered_input
    plain = load_sae(found.path)
    x = torch.randn(6, 16) + 3.0
    centred = x - x.mean(-1, keepdim=True)
    with torch.no_grad():
        assert torch.equal(sae.encode(x), plain.encode(centred))
        assert not torch.allclose(sae.encode(x), plain.encode(x), atol=1e-3)


def test_unknown_release_and_id_suggest_close_names(release_source):
    with pytest.raises(SteerError) as info:
        find_release("gemma-scope-2b-pt-res-canonicl", "x", where="saes[0]")
    assert str(info.value).startswith(
        "saes[0].release: unknown SAE release 'gemma-scope-2b-pt-res-canonicl'; "
        "did you mean 'gemma-scope-2b-pt-res-canonical'"
    )
    with pytest.raises(SteerError) as info:
        find_release(
            "gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonicl", where="saes[0]"
        )
    assert "saes[0].sae_id: release 'gemma-scope-2b-pt-res-canonical' has no sae_id" in str(
        info.value
    )
    assert "did you mean 'layer_20/width_16k/canonical'" in str(info.value)


def test_refused_layouts_say_why(release_source):
    if release_source == "shipped":
        pytest.skip("the shipped list holds only layouts steer reads")
    with pytest.raises(SteerError, match="cross-layer transcoders write many layers"):
        find_release("mntss-gemma-2-2b-2.5m-clt-as-per-layer", "layer_0", where="saes[0]")


def test_not_in_the_cache_offline_is_one_line(tmp_path, monkeypatch, release_source):
    offline_cache_env(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(SteerError) as info:
        fetch_release_sae(GPT2[0], GPT2[1], where="saes[0]")
    message = str(info.value)
    assert message.startswith("saes[0]: cannot fetch SAE repo 'jbloom/GPT2-Small-SAEs-Reformatted'")
    assert "\n" not in message


def test_steer_check_names_a_bad_release_with_exit_2(tmp_path, capsys, release_source):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "saes:\n  - id: g\n    release: gemma-scope-2b-pt-res-canonical\n"
        "    sae_id: layer_20/width_16k/canonicl\nprompts: [hi]\n"
    )
    code, _, err = call(["check", str(recipe)], capsys)
    assert_one_line_error(code, err, "saes[0].sae_id: release 'gemma-scope-2b-pt-res-canonical'")


def test_a_release_needs_its_sae_id():
    from steer.errors import SteerError as Error

    with pytest.raises(Error, match="release and sae_id go together"):
        parse_recipe({"saes": [{"id": "g", "release": "gpt2-small-res-jb"}], "prompts": ["hi"]})


def test_steer_check_refuses_a_release_for_another_model(tmp_path, capsys, release_source):
    recipe = tmp_path / "r.yaml"
    entry = "  - id: g\n    release: gemma-scope-2b-pt-res-canonical\n    sae_id: layer_20/width_16k/canonical\n"
    recipe.write_text(f"model: smollm2-135m-instruct\nsaes:\n{entry}prompts: [hi]\n")
    code, _, err = call(["check", str(recipe)], capsys)
    assert_one_line_error(
        code, err, "saes[0]: release 'gemma-scope-2b-pt-res-canonical' is for 'gemma-2-2b'"
    )
    allowed = entry + "    allow_other_model: true\n"
    recipe.write_text(f"model: smollm2-135m-instruct\nsaes:\n{allowed}prompts: [hi]\n")
    code, _, err = call(["check", str(recipe)], capsys)
    assert code == 0, err
