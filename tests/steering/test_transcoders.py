"""A transcoder steers: it reads the MLP's input, and the change to its features is written at
the MLP's output, as hand-computed with plain PyTorch hooks; with no edit, the plain tokens."""

from __future__ import annotations

import pytest
import torch
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.sae import save_sae
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe

PROMPTS = ["The cat sat on the mat", "Paris is"]


def _transcoder(tiny_model, **names):
    names = {"hook_name": "blocks.1.hook_mlp_in", "hook_name_out": "blocks.1.hook_mlp_out", **names}
    return make_sae("transcoder", d_in=tiny_model.d_model, d_sae=48, layer=None, seed=7,
                    apply_b_dec_to_input=False, model_name="tiny-llama", **names)  # fmt: skip


def _run(tiny_model, pm, path, **extra):
    recipe = {"saes": [{"id": "t", "path": str(path)}], "prompts": PROMPTS,
              "generation": {"max_new_tokens": 6}, **extra}  # fmt: skip
    return Steerer(parse_recipe(recipe), pm=pm, model=tiny_model).run().results


def _hand_computed(tiny_model, sae, feature, value):
    """Greedy HF generate with a hook on block 1's MLP: its output gains
    (value - f(input)[feature]) * W_dec[feature], f the transcoder's encoding of its input."""
    mlp = tiny_model.hf.model.layers[1].mlp

    def hook(_module, args, out):
        with torch.no_grad():
            f = sae.encode(args[0])[..., feature]
        return out + (value - f).unsqueeze(-1) * sae.W_dec[feature]

    handle = mlp.register_forward_hook(hook)
    try:
        enc = tiny_model.tokenize(PROMPTS, chat=None)
        kwargs = {"max_new_tokens": 6, "do_sample": False,
                  "pad_token_id": tiny_model.tokenizer.pad_token_id}  # fmt: skip
        with torch.inference_mode():
            ids = tiny_model.hf.generate(**enc, **kwargs)
    finally:
        handle.remove()
    n = enc["input_ids"].shape[1]
    return [tiny_model.tokenizer.decode(row[n:], skip_special_tokens=True) for row in ids]


def test_a_transcoder_with_no_edit_gives_the_plain_tokens(tiny_model, pm, tmp_path):
    save_sae(_transcoder(tiny_model), tmp_path / "t")
    assert all(r.steered == r.baseline for r in _run(tiny_model, pm, tmp_path / "t"))


def test_a_transcoder_clamp_is_written_at_the_mlp_output(tiny_model, pm, tmp_path):
    sae = _transcoder(tiny_model)
    save_sae(sae, tmp_path / "t")
    clamp = [{"plugin": "clamp", "sae": "t", "features": [5], "value": 40.0}]
    results = _run(tiny_model, pm, tmp_path / "t", interventions=clamp)
    expected = _hand_computed(tiny_model, sae, 5, 40.0)
    assert [r.steered for r in results] == expected
    assert any(r.steered != r.baseline for r in results)


def test_a_transcoder_writing_before_it_reads_is_refused(tiny_model, pm, tmp_path):
    bad = _transcoder(
        tiny_model, hook_name="blocks.2.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out"
    )
    save_sae(bad, tmp_path / "t")
    with pytest.raises(SteerError, match="saes\\[0\\]: the transcoder writes mlp_out of block 1"):
        _run(tiny_model, pm, tmp_path / "t")
