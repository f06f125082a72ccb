"""Next-token loss helpers shared by SAE evaluation and pinpoint's side-effect measurement,
and the loss of completions under a model (how fluent steered text is)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from steer.model.load import LoadedModel


def mean_nll(logprobs: torch.Tensor, targets: torch.Tensor) -> float:
    """The summed negative log-likelihood of ``targets`` ``[N]`` under ``logprobs``
    ``[N, vocab]`` (callers divide by the token count they accumulate)."""
    return float(-logprobs.gather(1, targets[:, None]).sum())


def completion_nll(
    model: LoadedModel, prompts: list[str], completions: list[str], *, chat: bool | None
) -> tuple[float, int]:
    """How likely ``model`` finds each completion after its prompt: the summed negative
    log-likelihood of the completions' tokens, and how many tokens that is (divide for the mean
    per-token loss; ``exp`` of a difference of means is a perplexity ratio).

    Each prompt is formatted and tokenized as generation does (:meth:`LoadedModel.tokenize`:
    the chat template when ``chat`` asks for it, no second BOS), so a generated completion is
    scored after the prompt tokens it was generated from. The completion text is tokenized on
    its own, without special tokens, and appended. Empty completions add nothing. One forward
    pass per pair, so no padding can shift positions.
    """
    total, count = 0.0, 0
    for prompt, text in zip(prompts, completions, strict=True):
        prompt_ids = model.tokenize([prompt], chat=chat)["input_ids"][0]
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        targets = torch.tensor(ids, device=prompt_ids.device)
        full = torch.cat([prompt_ids, targets])[None]
        with torch.inference_mode():
            # The logits at position t predict token t + 1: those from the prompt's last token
            # on predict the completion.
            logits = model.hf(input_ids=full).logits[0, len(prompt_ids) - 1 : -1].float()
        total += mean_nll(torch.log_softmax(logits, -1), targets)
        count += len(ids)
    return total, count
