"""The one nnsight trace pinpoint adds: replace a layer's output, read the last position's logits.

``logits_to_keep=1`` makes the model apply its unembedding to the last position only, which is
all a pinpoint metric reads (on SmolLM2 the 49k-wide unembedding is ~20 % of a forward). The
trace keeps autograd as the caller has it: attribution runs it under ``enable_grad`` and calls
``backward`` on the result after the trace, verification under ``inference_mode``.
"""

from __future__ import annotations

from typing import Any

import torch


def last_logits(model: Any, layer: int, ids: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 1, vocab]`` at the last position with block ``layer``'s output set to
    ``new`` ``[B, T, d]``."""
    envoy = model.layer_envoy(layer)
    with model.lm.trace(ids, logits_to_keep=1):
        envoy.output = new
        logits = model.lm.output.logits.save()
    return logits
