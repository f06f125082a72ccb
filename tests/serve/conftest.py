"""The tiny model behind a real server, with an orthonormal SAE whose features are easy to
read back (clamping feature k sets it exactly)."""

from __future__ import annotations

import pytest
from support.handmade import orthonormal_sae
from support.server import base_recipe, running

from steer.sae import save_sae
from steer.serve.state import Limits, build_state
from steer.steering.recipe import parse_recipe


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("serve") / "ortho"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=32, layer=1), path)
    return path


@pytest.fixture(scope="module")
def server(tiny_model, sae_dir):
    """A server of the tiny model (no API key), as ``(base_url, state)``."""
    state = build_state(parse_recipe(base_recipe(sae_dir)), Limits(max_tokens=64), model=tiny_model)
    with running(state) as url:
        yield url, state


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, tiny_model, sae_dir):
    """A recipe whose model is the tiny model saved as a Hugging Face folder, for servers in
    other processes (`steer serve`, Ray Serve replicas) that load it by path."""
    root = tmp_path_factory.mktemp("served")
    tiny_model.hf.save_pretrained(root / "tiny")
    tiny_model.tokenizer.save_pretrained(root / "tiny")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"model: {root / 'tiny'}\n"
        f"saes: [{{id: s, path: {sae_dir}, allow_other_model: true}}]\n"
        "generation: {max_new_tokens: 10, temperature: 0}\nprompts: [unused]\n"
    )
    return recipe
