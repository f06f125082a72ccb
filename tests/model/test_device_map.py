"""`device_map: auto` loads a Hugging Face model through accelerate (on this CPU-only machine,
onto the CPU) and steers it; SAEs go to their block's device. A GGUF cannot be mapped."""

from __future__ import annotations

import pytest

from steer.errors import SteerError
from steer.model import load_model
from steer.model.trace import block_device


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from support.tiny import tiny_loaded_model

    tiny = tiny_loaded_model(n_layers=3)
    folder = tmp_path_factory.mktemp("tiny-hf")
    tiny.hf.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


def test_a_mapped_model_loads_and_steers(saved_model, pm, tmp_path):
    from support.sae_factory import make_sae

    from steer.sae import save_sae
    from steer.steering.engine import Steerer
    from steer.steering.recipe import parse_recipe

    model = load_model(str(saved_model), device_map="auto")
    assert model.device == "cpu" and str(block_device(model, 2)) == "cpu"
    save_sae(make_sae(d_in=model.d_model, d_sae=32, layer=1, seed=2), tmp_path / "sae")
    recipe = {
        "model": str(saved_model),
        "device_map": "auto",
        "saes": [{"id": "s", "path": str(tmp_path / "sae")}],
        "interventions": [{"plugin": "clamp", "sae": "s", "features": [2], "value": 300.0}],
        "prompts": ["Paris is"],
        "generation": {"max_new_tokens": 5},
    }
    result = Steerer(parse_recipe(recipe), pm=pm).run().results[0]
    assert result.steered != result.baseline


def test_a_gguf_cannot_be_mapped():
    with pytest.raises(SteerError, match="device_map 'auto' needs a Hugging Face model"):
        load_model("smollm2-135m-instruct", device_map="auto")
