"""Integration tests on the real bundled SmolLM2-135M-Instruct (loaded once per session)."""

from __future__ import annotations

import math

import pytest
from support.handmade import orthonormal_sae
from support.sae_factory import make_sae

from steer.sae import save_sae
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "What is 2+2?",
]


@pytest.fixture(scope="module")
def sae_dirs(tmp_path_factory, smollm):
    root = tmp_path_factory.mktemp("saes")
    save_sae(
        make_sae(d_in=smollm.d_model, d_sae=256, layer=12, seed=0, architecture="topk", k=16),
        root / "topk",
    )
    ortho = orthonormal_sae(
        d_in=smollm.d_model, d_sae=64, layer=12, model_name="smollm2-135m-instruct"
    )
    save_sae(ortho, root / "ortho")
    return root


def run(smollm, **recipe):
    recipe.setdefault("prompts", PROMPTS)
    recipe.setdefault("generation", {"max_new_tokens": 16})
    return Steerer(parse_recipe(recipe), model=smollm).run().results


def test_bundled_model_facts(smollm):
    assert smollm.n_layers == 30
    assert smollm.d_model == 576
    assert smollm.has_chat_template
    assert smollm.hook_name(12) == "model.layers.12"


def test_the_model_cache_reloads_identically(smollm):
    import torch

    from steer.model import bundled_gguf_path, cache_dir, load_model
    from steer.model.gguf import gguf_cache_key

    cached = cache_dir() / "models" / gguf_cache_key(bundled_gguf_path())
    assert (cached / "model.safetensors").is_file()
    again = load_model(device="cpu")
    enc = smollm.tokenize(PROMPTS[:1], chat=True)
    with torch.inference_mode():
        a = smollm.hf(**enc).logits
        b = again.hf(**enc).logits
    assert torch.equal(a, b)


def test_no_interventions_is_token_for_token_plain_generate(smollm):
    results = run(smollm)
    for r in results:
        assert r.steered == r.baseline
    assert "Paris" in results[0].steered


def test_attached_sae_with_no_edit_changes_nothing(smollm, sae_dirs):
    results = run(
        smollm,
        saes=[{"id": "s", "path": str(sae_dirs / "topk")}],
        interventions=[{"plugin": "scale", "sae": "s", "features": list(range(256)), "value": 1.0}],
    )
    for r in results:
        assert r.steered == r.baseline


def test_clamp_holds_on_every_decode_step(smollm, sae_dirs):
    results = run(
        smollm,
        saes=[{"id": "s", "path": str(sae_dirs / "ortho")}],
        interventions=[{"plugin": "clamp", "sae": "s", "features": [5], "value": 12.0}],
        monitors=[{"sae": "s", "features": [5], "threshold": -1e9}],
    )
    for r in results:
        generated = [e for e in r.events if e["phase"] == "generated"]
        assert generated and [e["token_index"] for e in generated] == list(range(len(generated)))
        for e in r.events:
            assert math.isclose(e["activation"], 12.0, abs_tol=0.05), e


def test_strong_clamp_changes_the_output(smollm, sae_dirs):
    results = run(
        smollm,
        saes=[{"id": "s", "path": str(sae_dirs / "ortho")}],
        interventions=[{"plugin": "add", "sae": "s", "features": [5], "value": 60.0}],
    )
    assert all(r.steered != r.baseline for r in results)


def test_batch_with_per_prompt_interventions_equals_each_alone(smollm, sae_dirs):
    saes = [{"id": "s", "path": str(sae_dirs / "ortho")}]
    prompts = [
        {
            "text": PROMPTS[0],
            "interventions": [{"plugin": "add", "sae": "s", "features": [1], "value": 40.0}],
        },
        {"text": PROMPTS[1]},
        {
            "text": PROMPTS[2],
            "interventions": [{"plugin": "clamp", "sae": "s", "features": [9], "value": -30.0}],
        },
    ]
    together = run(smollm, saes=saes, prompts=prompts)
    for prompt, batched in zip(prompts, together, strict=True):
        alone = run(smollm, saes=saes, prompts=[prompt])[0]
        assert batched.steered == alone.steered
