"""The nnsight adapter on the block layouts of several families (tiny random-weight models
built from their HF configs): a block's output is the residual stream after it, its HF path is
the SAE hook name, the final norm is found, and replacing a block's output with itself, or an
edit that returns it unchanged, leaves the model's logits and tokens as they were."""

from __future__ import annotations

import threading

import pytest
import torch
from support.tiny import tiny_llama, tiny_tokenizer

from steer.model import LoadedModel, trace
from steer.model.sites import Hook


def tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=32, n_layer=3, n_head=2)
    return GPT2LMHeadModel(config).eval()


def tiny_neox(vocab_size: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return GPTNeoXForCausalLM(config).eval()


FAMILIES = {
    # family: (factory, HF path of block 1, HF path of the final norm)
    "llama": (lambda v: tiny_llama(v, n_layers=3), "model.layers.1", "model.norm"),
    "gpt2": (tiny_gpt2, "transformer.h.1", "transformer.ln_f"),
    "gpt_neox": (tiny_neox, "gpt_neox.layers.1", "gpt_neox.final_layer_norm"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    factory, block, norm = FAMILIES[request.param]
    model = LoadedModel(name=f"tiny-{request.param}", hf=factory(len(tok)), tokenizer=tok)
    ids = tok(["The cat sat on the mat. The dog ran"], return_tensors="pt")["input_ids"]
    return model, ids, block, norm


def test_a_block_output_is_the_residual_stream_after_it(family):
    model, ids, _, _ = family
    with torch.inference_mode():
        want = model.hf(ids, output_hidden_states=True).hidden_states
    # hidden_states[0] is the embedding; the last one is after the final norm in GPT-2/NeoX.
    for layer in range(model.n_layers - 1):
        assert torch.equal(trace.layer_output(model, layer, ids), want[layer + 1].float())


def test_block_paths_and_final_norm_follow_the_family(family):
    model, _, block, norm = family
    assert trace.block_path(model, 1) == block == model.hook_name(1)
    module = model.hf.get_submodule(norm)
    assert torch.equal(trace.final_norm_weight(model), module.weight.detach().float())


def test_replacing_a_block_output_with_itself_changes_nothing(family):
    model, ids, _, _ = family
    hidden, logits = trace.clean_run(model, 1, ids)
    assert torch.allclose(trace.patched_logits(model, 1, ids, hidden), logits, atol=1e-5)
    with torch.inference_mode():  # last_logits keeps autograd as the caller has it
        last = trace.last_logits(model, 1, ids, hidden)
    assert torch.allclose(last[:, -1], logits[:, -1], atol=1e-5)


def within(seconds: float, fn):
    """``fn()``, failing the test (instead of hanging it) when it does not return in time."""
    done: list = []
    worker = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert done, f"did not return within {seconds} s"
    return done[0]


def plain_generation(model, ids, n: int):
    """``(enc, generate kwargs, plain transformers output)`` for ``n`` greedy new tokens."""
    kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    kwargs["pad_token_id"] = model.tokenizer.pad_token_id
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        return enc, kwargs, model.hf.generate(**enc, **kwargs)


def test_a_generate_edit_that_changes_nothing_gives_the_plain_tokens(family):
    model, ids, _, _ = family
    enc, kwargs, plain = plain_generation(model, ids, 5)
    seen: list[tuple[int, int]] = []

    def edit(hook, step, hidden):
        seen.append((hook.layer, step))
        return hidden

    hooks = [Hook.at("resid_post", 2), Hook.at("resid_post", 0)]
    steered = trace.generate(model, enc, kwargs, hooks=hooks, edit=edit)
    assert torch.equal(steered, plain)
    # every step visits the layers in forward order, the prompt pass first
    assert seen[:2] == [(0, 0), (2, 0)] and seen[-1] == (2, 4)


def test_a_generate_edit_writes_back_into_the_block(family):
    model, ids, _, _ = family
    enc, kwargs, plain = plain_generation(model, ids, 3)
    push = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)) * 50
    steered = trace.generate(
        model, enc, kwargs, hooks=[Hook.at("resid_post", 1)], edit=lambda _l, _s, h: h + push
    )
    assert not torch.equal(steered, plain)


def test_a_step_with_nothing_to_edit_stays_in_step_with_the_model(family):
    # An edit on the prompt only: later steps read no block, and must still follow the model's
    # own steps one by one (nnsight would otherwise run the step loop on, unbounded).
    model, ids, _, _ = family
    enc, kwargs, plain = plain_generation(model, ids, 5)
    asked: list[int] = []

    def prompt_only(layer, step):
        asked.append(step)
        return step == 0

    steered = trace.generate(
        model,
        enc,
        kwargs,
        hooks=[Hook.at("resid_post", 1)],
        edit=lambda _l, _s, h: h,
        busy=prompt_only,
    )
    # Steps 0-4 make the 5 tokens; the loop then waits at step 5 for a pass that never comes.
    assert asked == [0, 1, 2, 3, 4, 5]
    assert torch.equal(steered, plain)
