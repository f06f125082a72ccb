"""Completion scoring on the tiny model: the summed NLL matches a hand-built forward pass, the
chat template wraps the prompt exactly as generation does, and empty completions add nothing."""

from __future__ import annotations

import pytest
import torch

from steer.model.loss import completion_nll

PROMPT = "The cat sat on the mat."
COMPLETION = " The dog ran in the park."


def nll_by_hand(model, context: str, completion: str) -> tuple[float, int]:
    """-sum log p(completion token | everything before it), from one plain forward pass over
    the context's and the completion's tokens, no special tokens added."""
    tok = model.tokenizer
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    comp = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + comp])
    with torch.no_grad():
        logprobs = torch.log_softmax(model.hf(input_ids=ids).logits[0].float(), -1)
    picked = [logprobs[len(ctx) - 1 + i, t] for i, t in enumerate(comp)]
    return -float(sum(picked)), len(comp)


def test_completion_nll_matches_a_forward_pass_by_hand(tiny_model):
    total, count = completion_nll(tiny_model, [PROMPT], [COMPLETION], chat=False)
    want, n = nll_by_hand(tiny_model, PROMPT, COMPLETION)
    assert count == n == 7
    assert total == pytest.approx(want, rel=1e-5)
    # A random-weight model over a 384-token vocabulary: a few nats per token, never zero.
    assert 1.0 < total / count < 20.0


def test_completion_nll_formats_the_prompt_with_the_chat_template(tiny_model):
    chat_text = "<|im_start|>user\n" + PROMPT + "<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_model.format_prompt(PROMPT, True) == chat_text
    total, count = completion_nll(tiny_model, [PROMPT], [COMPLETION], chat=True)
    want, n = nll_by_hand(tiny_model, chat_text, COMPLETION)
    assert (count, total) == (n, pytest.approx(want, rel=1e-5))
    # chat=None follows the model: the tiny tokenizer has a template, so the same numbers.
    assert completion_nll(tiny_model, [PROMPT], [COMPLETION], chat=None) == (total, count)
    plain, _ = completion_nll(tiny_model, [PROMPT], [COMPLETION], chat=False)
    assert plain != pytest.approx(total)


def test_completion_nll_sums_over_pairs_and_skips_empty_completions(tiny_model):
    one = completion_nll(tiny_model, [PROMPT], [COMPLETION], chat=False)
    other = completion_nll(tiny_model, ["Paris is"], [" the capital of France."], chat=False)
    both = completion_nll(
        tiny_model,
        [PROMPT, "Paris is", "Once upon a time"],
        [COMPLETION, " the capital of France.", ""],
        chat=False,
    )
    assert both[1] == one[1] + other[1]
    assert both[0] == pytest.approx(one[0] + other[0], rel=1e-6)
    assert completion_nll(tiny_model, [PROMPT], [""], chat=False) == (0.0, 0)


def test_completion_nll_needs_one_completion_per_prompt(tiny_model):
    with pytest.raises(ValueError):
        completion_nll(tiny_model, [PROMPT, PROMPT], [COMPLETION], chat=False)
