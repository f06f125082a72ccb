"""SAEs at every site of every family, through the recipe path (:class:`Steerer`): an SAE
whose hook names say the site attaches there, changes nothing until a recipe edits it, steers
when a clamp does, and its monitor reports the activations of that site; an SAE named by the
recipe's ``site:`` and ``layer:``, or by the family's Hugging Face module path, lands on the
same site; and the SAEs a model cannot take are one-line SteerErrors.

Models are the tiny ones of :mod:`support.families`; the reference for what a site holds is
``site_output``, itself checked against torch hooks in ``test_sites.py``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from support.families import FAMILIES, MODULES, one_thread, tiny_family
from support.handmade import orthonormal_sae

from steer.errors import SteerError
from steer.model import trace
from steer.model.layouts import site_width
from steer.model.sites import SITE_KINDS, Hook, hook_of
from steer.sae import save_sae
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe

PROMPT = "The cat sat on the mat. The dog ran"
NEW_TOKENS = 4
GENERATION = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "chat": False}
WATCHED = [0, 3, 5]
BIAS = 100.0  # every feature of the orthonormal SAE is on: its encoding is linear


def has(family: str, kind: str) -> bool:
    return not (family == "gpt_neox" and kind == "resid_mid")  # parallel blocks


CASES = [
    pytest.param(family, kind, id=f"{family}-{kind}")
    for family in FAMILIES
    for kind in SITE_KINDS
    if has(family, kind)
]


@pytest.fixture(scope="module")
def build():
    """``build(family)``: the family's tiny model, made once for the module (which runs
    on one torch thread)."""
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = tiny_family(family)
        return cache[family]

    with one_thread():
        yield get


def site_sae(model, hook: Hook, *, hook_name=None, hf_hook_name=None, d_in=None, **cfg):
    """An orthonormal SAE as wide as ``hook``'s site (or ``d_in``), its cfg naming
    ``hook_name`` / ``hf_hook_name`` (none by default) and ``model.name``."""
    width = d_in or site_width(model.hf.config, hook)
    sae = orthonormal_sae(d_in=width, d_sae=8, layer=hook.layer, bias=BIAS, model_name=model.name)
    names = {"hook_name": hook_name, "hf_hook_name": hf_hook_name}
    sae.cfg = dataclasses.replace(sae.cfg, **names, **cfg)
    return sae


def steerer(model, pm, folder, *, spec=None, **recipe) -> Steerer:
    recipe.setdefault("prompts", [PROMPT])
    saes = [{"id": "s", "path": str(folder), **(spec or {})}]
    return Steerer(
        parse_recipe({"saes": saes, "generation": GENERATION, **recipe}), pm=pm, model=model
    )


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_an_sae_steers_and_monitors_its_site(build, pm, tmp_path, family, kind):
    """One batch, the same prompt twice: with no edit (tokens as the plain model's), with a
    clamp (other tokens). The monitor reads the first row's site as it is, the second's as
    the clamp left it."""
    model, hook = build(family), Hook.at(kind, 1)
    sae = site_sae(model, hook, hook_name=hook.name)
    save_sae(sae, tmp_path / "sae")
    clamp = {"plugin": "clamp", "sae": "s", "features": [0, 1, 2, 3], "value": BIAS + 30}
    run = steerer(
        model,
        pm,
        tmp_path / "sae",
        prompts=[PROMPT, {"text": PROMPT, "interventions": [clamp]}],
        monitors=[{"sae": "s", "features": WATCHED, "threshold": 0.0, "positions": "all"}],
    )
    assert run.saes["s"][1] == hook
    plain, clamped = run.run().results
    assert plain.steered == plain.baseline
    assert clamped.steered != clamped.baseline
    # the monitor reads the second row after the clamp: what was written at the site holds
    held = [e["activation"] for e in clamped.events if e["feature"] in (0, 3)]
    assert len(held) == 2 * len(plain.events) // len(WATCHED)
    assert all(math.isclose(a, BIAS + 30, abs_tol=2e-3) for a in held), held

    # What the monitor reported is the SAE's encoding of the site, token by token.
    enc = model.tokenize([PROMPT], chat=False)
    kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    with torch.inference_mode():
        ids = model.hf.generate(**enc, **kwargs, pad_token_id=model.tokenizer.pad_token_id)
    with torch.no_grad():
        acts = sae.encode(trace.site_output(model, hook, ids))[0]
    n_prompt = enc["input_ids"].shape[1]
    # every prompt token, and every new token but the last (no forward pass reads it)
    assert len(plain.events) == (n_prompt + NEW_TOKENS - 1) * len(WATCHED)
    for event in plain.events:
        position = event["token_index"] + (n_prompt if event["phase"] == "generated" else 0)
        want = float(acts[position, event["feature"]])
        assert math.isclose(event["activation"], want, abs_tol=2e-3), (event, want)


def hf_paths(family: str, layer: int) -> dict[str, str]:
    """The Hugging Face module path that names each site that has one (``.input``: the
    module's input), as SAEs trained on Hugging Face models spell it."""
    paths = MODULES[family]
    block = f"{paths['blocks']}.{layer}"
    named = {
        "resid_pre": f"{block}.input",
        "resid_post": block,
        "attn_out": f"{block}.{paths['attn']}",
        "mlp_out": f"{block}.{paths['mlp']}",
        "z": f"{block}.{paths['z']}.input",
    }
    # `post_attention_layernorm` is the norm before the MLP in Llama but the one after
    # attention in Gemma: steer does not guess from that name (the TL name says it).
    if paths["attn"] == "post_attention_layernorm":
        del named["attn_out"]
    return named


def test_a_name_whose_meaning_depends_on_the_family_is_not_guessed():
    assert hook_of(None, "model.layers.1.post_attention_layernorm") is None
    assert hook_of(None, "model.layers.1.mlp.input") == Hook.at("mlp_in", 1)
    assert hook_of(None, "model.layers.1.input") == Hook.at("resid_pre", 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_site_and_layer_in_the_recipe_or_hf_names_attach_where_tl_names_do(
    build, pm, tmp_path, family
):
    model = build(family)
    paths = hf_paths(family, 1)
    for kind in (k for k in SITE_KINDS if has(family, k)):
        hook = Hook.at(kind, 1)
        save_sae(site_sae(model, hook), tmp_path / kind)  # no hook names
        given = steerer(model, pm, tmp_path / kind, spec={"site": kind, "layer": 1})
        assert given.saes["s"][1] == hook
        if kind in paths:
            save_sae(site_sae(model, hook, hf_hook_name=paths[kind]), tmp_path / f"hf-{kind}")
            assert steerer(model, pm, tmp_path / f"hf-{kind}").saes["s"][1] == hook, paths[kind]


@pytest.mark.parametrize(
    ("family", "sae", "spec", "message"),
    [
        (
            "gpt_neox",
            {"hook_name": "blocks.1.hook_resid_mid"},
            None,
            "gpt_neox blocks run attention and MLP in parallel: there is no resid_mid site",
        ),
        (
            "llama",
            {"hook_name": "blocks.5.hook_mlp_out"},
            None,
            "the SAE's layer 5 is out of range (the model has 3 layers)",
        ),
        (
            "gpt2",
            {},
            {"site": "z", "layer": 3},
            "the SAE's layer 3 is out of range (the model has 3 layers)",
        ),
        (
            "gemma2",
            {"hook_name": "blocks.1.attn.hook_z", "d_in": 32},
            None,
            "SAE d_in is 32 but the model's z of block 1 is 64",
        ),
        (
            "qwen3",
            {"hook_name": "blocks.1.hook_mlp_out", "d_in": 64},
            None,
            "SAE d_in is 64 but the model's mlp_out of block 1 is 32",
        ),
        (
            "llama",
            {"hook_name": "blocks.1.hook_resid_pre", "model_name": "google/gemma-2-2b"},
            None,
            "the SAE was trained on 'google/gemma-2-2b', not on 'tiny-llama' (set "
            "`allow_other_model: true` on the SAE entry to attach it anyway)",
        ),
    ],
    ids=["neox-resid_mid", "layer-named", "layer-given", "z-width", "mlp_out-width", "model"],
)
def test_an_sae_the_model_cannot_take_is_refused(build, pm, tmp_path, family, sae, spec, message):
    model = build(family)
    save_sae(site_sae(model, Hook.at("resid_post", 1), **sae), tmp_path / "sae")
    with pytest.raises(SteerError) as info:
        steerer(model, pm, tmp_path / "sae", spec=spec)
    assert str(info.value) == f"saes[0]: {message}"
