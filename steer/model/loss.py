"""Next-token loss helpers shared by SAE evaluation and pinpoint's side-effect measurement."""

from __future__ import annotations

import torch


def mean_nll(logprobs: torch.Tensor, targets: torch.Tensor) -> float:
    """The summed negative log-likelihood of ``targets`` ``[N]`` under ``logprobs``
    ``[N, vocab]`` (callers divide by the token count they accumulate)."""
    return float(-logprobs.gather(1, targets[:, None]).sum())
