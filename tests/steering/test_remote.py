"""Recipes with ``remote:`` on the tiny model: traces through nnsight's remote backend give the
local tokens and numbers, and what cannot run remotely is refused by name before anything is
sent.

Two servers: nnsight's own ``remote="local"`` dry run, and :mod:`support.remote_server`'s
stricter one (the deserialised trace runs with steer unimportable and only saved values come
back), which is also what serves a client holding a weightless copy of the model."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from support.cli_helpers import assert_one_line_error, call
from support.handmade import orthonormal_sae
from support.remote_server import refuse_sending, serve
from support.sae_factory import make_sae

from steer import InterventionType, hookimpl
from steer.errors import SteerError
from steer.model.sites import Hook
from steer.pinpoint import Pinpointer, parse_pinpoint_recipe
from steer.sae import save_sae
from steer.steering.check import check_recipe
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe
from steer.steering.remote import MONITOR_REFUSAL, check_remote_sae

PROMPTS = ["The cat sat on the mat", "Paris is", "Once upon a time there was a little girl who"]
CLAMP = [{"plugin": "clamp", "sae": "s", "features": [3], "value": 40.0}]
ABLATE = [{"plugin": "ablate", "sae": "s", "features": [0, 1, 2, 3], "positions": "generated"}]
MODEL_FIX = "name a model the server hosts by its Hugging Face id, e.g. meta-llama/Llama-3.1-8B"
BAD_REMOTE = "remote: expected true, false, 'local' or a server URL (http:// or https://), got "


@pytest.fixture
def sae_dir(tmp_path, tiny_model):
    path = tmp_path / "ortho"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=32, layer=1), path)
    return path


def _generate(model, pm, sae_dir, remote, interventions, **generation):
    recipe = parse_recipe(
        {
            "model": "tiny-org/tiny-llama",  # a Hub id: what a remote server can name
            "remote": remote,
            "saes": [{"id": "s", "path": str(sae_dir), "allow_other_model": True}],
            "prompts": PROMPTS,
            "generation": {"max_new_tokens": 8, **generation},
            "interventions": interventions,
        }
    )
    results = Steerer(recipe, pm=pm, model=model).run().results
    return [(r.baseline, r.steered) for r in results]


@pytest.mark.parametrize("interventions", [CLAMP, ABLATE], ids=["clamp", "ablate"])
@pytest.mark.parametrize("server", ["nnsight", "strict"])
def test_a_steered_generation_is_the_local_one_token_for_token(
    tiny_model, pm, sae_dir, monkeypatch, interventions, server
):
    local = _generate(tiny_model, pm, sae_dir, False, interventions)
    assert any(base != steered for base, steered in local)  # the edit does something
    strict = serve(monkeypatch) if server == "strict" else None
    assert _generate(tiny_model, pm, sae_dir, "local", interventions) == local
    if strict is not None:
        assert strict.requests == 2  # the baseline and the steered generate of the one batch
    assert tiny_model.remote is False  # the caller's model is left as it was


def test_sampling_and_a_transcoder_run_remotely_as_here(tiny_model, pm, tmp_path, monkeypatch):
    path = tmp_path / "transcoder"
    sae = make_sae("transcoder", d_in=tiny_model.d_model, d_sae=48, layer=None, seed=7,
                   hook_name="blocks.1.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out",
                   apply_b_dec_to_input=False, model_name="tiny-llama")  # fmt: skip
    save_sae(sae, path)
    edit = [{"plugin": "clamp", "sae": "s", "features": [5], "value": 6.0}]
    sampled = {"temperature": 1.0, "seed": 3}
    local = _generate(tiny_model, pm, path, False, edit, **sampled)
    serve(monkeypatch)
    assert _generate(tiny_model, pm, path, "local", edit, **sampled) == local


def test_trace_reads_and_patched_logits_are_the_local_ones(tiny_model, monkeypatch):
    import dataclasses

    from steer.model.trace import clean_run, layer_output, patched_logits, site_output

    ids = tiny_model.tokenize(PROMPTS, chat=False)["input_ids"]
    far = dataclasses.replace(tiny_model, remote="local")
    strict = serve(monkeypatch)
    new = layer_output(tiny_model, 2, ids) * 1.5
    pairs = [
        (layer_output(tiny_model, 1, ids), layer_output(far, 1, ids)),
        (site_output(tiny_model, Hook.at("mlp_out", 2), ids),
         site_output(far, Hook.at("mlp_out", 2), ids)),
        (patched_logits(tiny_model, 2, ids, new), patched_logits(far, 2, ids, new)),
        *zip(clean_run(tiny_model, 3, ids), clean_run(far, 3, ids), strict=True),
    ]  # fmt: skip
    for here, there in pairs:
        assert torch.equal(here, there)
    assert strict.requests == 4  # one per remote read


def _pinpoint(model, sae_dir, remote, texts, **extra):
    recipe = parse_pinpoint_recipe(
        {
            "model": "tiny",
            "remote": remote,
            "saes": [{"id": "s", "path": str(sae_dir), "allow_other_model": True}],
            "prompts": ["The cat sat on the", "A dog ran in the", "Paris is the capital of"],
            "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
            "top_k": 4,
            "curve_max": 4,
            "side_effect_data": str(texts),
            "side_effect_tokens": 128,
            **extra,
        }
    )
    result = Pinpointer(recipe, model=model).run().to_dict()
    return json.loads(json.dumps(result, default=str), object_hook=_no_timing)


def _no_timing(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "timing"}


@pytest.mark.parametrize("method", ["attribution_patching", "integrated_gradients"])
def test_pinpointing_remotely_gives_the_local_result(tiny_model, tmp_path, monkeypatch, method):
    sae_dir = tmp_path / "sae"
    save_sae(make_sae(d_in=tiny_model.d_model, d_sae=48, layer=1, seed=3), sae_dir)
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat on the mat. A dog ran in the park. " * 40, encoding="utf-8")
    local = _pinpoint(tiny_model, sae_dir, False, texts, method=method, steps=2)
    strict = serve(monkeypatch)
    # Gradients come back through a second trace (the backward pass runs on the server).
    assert _pinpoint(tiny_model, sae_dir, "local", texts, method=method, steps=2) == local
    assert strict.requests > 0


@pytest.fixture
def hub_client(tmp_path, monkeypatch, tiny_model):
    """``tiny-org/tiny-llama`` in an offline Hugging Face cache: its config and tokenizer only,
    no weights, as a client of a remote server needs."""
    from support.hf_cache import offline_cache_env, populate_from_folder

    folder = tmp_path / "repo"
    tiny_model.hf.config.save_pretrained(folder)
    tiny_model.hf.generation_config.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    offline_cache_env(monkeypatch, tmp_path / "hub")
    populate_from_folder(tmp_path / "hub", "tiny-org/tiny-llama", folder)
    return "tiny-org/tiny-llama"


def test_a_client_without_weights_gets_the_servers_tokens(
    hub_client, tiny_model, pm, sae_dir, monkeypatch
):
    from steer.model import load_model
    from steer.model.trace import layer_output

    client = load_model(hub_client, remote=True)
    assert client.remote is True
    assert all(p.is_meta for p in client.hf.parameters())  # nothing of the weights here
    local = _generate(tiny_model, pm, sae_dir, False, CLAMP)
    serve(monkeypatch, model=tiny_model)  # the server holds the weights
    assert _generate(client, pm, sae_dir, True, CLAMP) == local
    ids = tiny_model.tokenize(PROMPTS, chat=False)["input_ids"]
    assert torch.equal(layer_output(client, 2, ids), layer_output(tiny_model, 2, ids))


def _write(tmp_path, data) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


REFUSED = [
    ({"remote": True},
     f"model: 'smollm2-135m-instruct' is the bundled GGUF model, which a remote server cannot "
     f"load: {MODEL_FIX}"),
    ({"remote": "http://localhost:5001", "model": "my/model.gguf"},
     f"model: 'my/model.gguf' is a GGUF file, which a remote server cannot load: {MODEL_FIX}"),
    ({"remote": "https://ndif.example.org", "model": "./my-model"},
     f"model: './my-model' is a local folder, which a remote server cannot load: {MODEL_FIX}"),
    ({"remote": True, "model": "meta-llama/Llama-3.1-8B", "dtype": "bfloat16"},
     "dtype: a remote server runs the model in the dtype it was deployed with; remove dtype (or "
     "`remote`)"),
    ({"remote": True, "model": "meta-llama/Llama-3.1-8B", "device_map": "auto"},
     "device_map: a remote server places the model on its own devices; remove device_map (or "
     "`remote`)"),
    ({"remote": "local", "monitors": [{"sae": "s", "features": [1], "action": "log"}]},
     f"monitors[0]: {MONITOR_REFUSAL}"),
    ({"remote": "local", "monitors": [{"sae": "s", "features": [1], "action": "stop"}]},
     f"monitors[0]: {MONITOR_REFUSAL}"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), REFUSED, ids=lambda x: str(x)[:40])
def test_what_cannot_run_remotely_is_refused_by_name(
    tmp_path, capsys, monkeypatch, sae_dir, tiny_model, pm, extra, message
):
    data = {"saes": [{"id": "s", "path": str(sae_dir)}], "prompts": ["hi"], **extra}
    _refused(tmp_path, capsys, monkeypatch, data, message,
             lambda: Steerer(parse_recipe(data), pm=pm, model=tiny_model).run())  # fmt: skip


def test_a_remote_pinpoint_needs_a_hub_model(tmp_path, capsys, monkeypatch, sae_dir, tiny_model):
    data = {"remote": True, "saes": [{"id": "s", "path": str(sae_dir)}], "prompts": ["a b"],
            "metric": {"logit_diff": {"target": " cat", "foil": " dog"}}}  # fmt: skip
    message = (
        f"model: 'smollm2-135m-instruct' is the bundled GGUF model, which a remote server "
        f"cannot load: {MODEL_FIX}"
    )
    _refused(tmp_path, capsys, monkeypatch, data, message,
             lambda: Pinpointer(parse_pinpoint_recipe(data), model=tiny_model))  # fmt: skip


def _refused(tmp_path, capsys, monkeypatch, data, message, start) -> None:
    """``steer check`` and the Python API both refuse ``data`` with ``message``, before
    anything is sent."""
    path = _write(tmp_path, data)
    code, _, err = call(["check", path], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == f"error: {path}: {message}"
    refuse_sending(monkeypatch)
    with pytest.raises(SteerError) as info:
        start()
    assert str(info.value) == message


def double(acts, value):
    return acts * 2


class _ThirdParty:
    @hookimpl
    def steer_register_interventions(self, register):
        register(InterventionType("double", double, "twice the activation"))


def test_a_third_party_intervention_is_refused(tmp_path, capsys, monkeypatch, sae_dir, pm):
    pm.register(_ThirdParty(), name="third-party")
    monkeypatch.setattr("steer.plugins.manager.get_plugin_manager", lambda: pm)
    data = {"remote": "local", "saes": [{"id": "s", "path": str(sae_dir)}],
            "prompts": [{"text": "hi", "interventions": [
                {"plugin": "double", "sae": "s", "features": [1]}]}]}  # fmt: skip
    message = (
        f"prompts[0].interventions[0].plugin: intervention 'double' comes from module "
        f"{__name__!r}, which a remote server cannot import: only steer's own interventions "
        "run remotely (ablate, add, clamp, scale)"
    )
    with pytest.raises(SteerError) as info:
        check_recipe(parse_recipe(data), pm)
    assert str(info.value) == message
    path = _write(tmp_path, data)
    code, _, err = call(["check", path], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == f"error: {path}: {message}"
    # the same recipe runs here
    check_recipe(parse_recipe({**data, "remote": False}), pm)


def test_a_third_party_sae_architecture_is_refused():
    class PluginSAE:  # stands for a class a plugin registers
        pass

    recipe = parse_recipe({"remote": True, "model": "org/model", "prompts": ["hi"]})
    with pytest.raises(SteerError) as info:
        check_remote_sae(recipe, 0, PluginSAE)
    assert str(info.value) == (
        f"saes[0]: SAE architecture PluginSAE comes from module {__name__!r}, which a remote "
        "server cannot import: only steer's own architectures run remotely"
    )
    check_remote_sae(recipe, 0, type(orthonormal_sae(d_in=8, d_sae=4, layer=1)))  # steer's own


@pytest.mark.parametrize("value", [3, 1.5, None, "yes", "ftp://x", "http://", "https://a b", []])
@pytest.mark.parametrize("kind", ["steering", "pinpoint"])
def test_a_bad_remote_value_is_a_located_recipe_error(value, kind):
    if kind == "steering":
        data, parse = {"prompts": ["hi"], "remote": value}, parse_recipe
    else:
        data = {"saes": [{"id": "s", "builtin": "smollm2-135m-res12-topk"}], "prompts": ["a"],
                "metric": {"logprob": {"target": " he"}}, "remote": value}  # fmt: skip
        parse = parse_pinpoint_recipe
    with pytest.raises(SteerError) as info:
        parse(data, source="r.yaml")
    assert str(info.value) == f"r.yaml: {BAD_REMOTE}{value!r}"


def test_a_bad_remote_value_fails_steer_check(tmp_path, capsys):
    path = _write(tmp_path, {"prompts": ["hi"], "remote": "ftp://x"})
    code, _, err = call(["check", path], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == f"error: {path}: {BAD_REMOTE}'ftp://x'"


@pytest.mark.parametrize("value", [True, False, "local", "http://localhost:5001", "https://a.b"])
def test_good_remote_values(value):
    assert parse_recipe({"prompts": ["hi"], "remote": value}).remote == value


def test_steer_is_sent_by_value_only_while_a_trace_is_sent(tiny_model, monkeypatch):
    import dataclasses

    import cloudpickle

    from steer.model.remote import shipped
    from steer.model.trace import layer_output

    serve(monkeypatch)
    ids = tiny_model.tokenize(PROMPTS[:1], chat=False)["input_ids"]
    layer_output(dataclasses.replace(tiny_model, remote="local"), 1, ids)
    assert "steer" not in cloudpickle.list_registry_pickle_by_value()
    cloudpickle.register_pickle_by_value(sys.modules["steer"])  # the user's own registration
    try:
        with shipped("local") as where:
            assert where == {"remote": "local"}
        assert "steer" in cloudpickle.list_registry_pickle_by_value()  # left as it was
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules["steer"])
    with shipped(False) as where:
        assert where == {}


def test_a_site_follows_the_activations_to_their_device(tiny_model, pm, sae_dir):
    """On a server the SAE arrives as CPU tensors and the model is on a GPU: the first edit
    moves the site there (here: the meta device stands in for the GPU)."""
    from steer.steering.attach import attach_saes, load_saes
    from steer.steering.plan import build_sites

    recipe = parse_recipe(
        {"saes": [{"id": "s", "path": str(sae_dir)}], "prompts": ["a", "b"], "interventions": CLAMP}
    )
    saes = attach_saes(load_saes(recipe, pm=pm), tiny_model, recipe)
    (site,) = build_sites(recipe, [0, 1], saes, pm, dtype=torch.float32)
    site.move_to(torch.device("meta"))
    tensors = [site.features, site.decoder, *[op.cols for op in site.operations]]
    assert site.sae.device.type == "meta" and all(t.is_meta for t in tensors)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["serve", "{path}"], "steer serve"),
        (["eval", "{path}", "--concept", "sea"], "steer eval"),
        (["monitor", "score", "{path}", "-i", "{path}"], "steer monitor score"),
    ],
)
def test_commands_that_run_the_model_here_refuse_remote(tmp_path, capsys, argv, command):
    path = _write(tmp_path, {"prompts": ["hi"], "remote": "local"})
    code, _, err = call([a.format(path=path) for a in argv], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == (
        f"error: {path}: remote: {command} runs the model on this machine; remove `remote` "
        "(steer run and steer pinpoint run recipes remotely)"
    )


def test_steer_run_refuses_before_loading_the_model(tmp_path, capsys, monkeypatch, sae_dir):
    import steer.model

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: pytest.fail("loaded"))
    data = {"remote": "local", "saes": [{"id": "s", "path": str(sae_dir)}], "prompts": ["hi"],
            "monitors": [{"sae": "s", "features": [1], "action": "stop"}]}  # fmt: skip
    path = _write(tmp_path, data)
    code, _, err = call(["run", path], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == f"error: {path}: monitors[0]: {MONITOR_REFUSAL}"
