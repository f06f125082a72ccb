"""The JumpReLU SAE: a feature is on only above its own learned threshold."""

from __future__ import annotations

import torch

from steer.sae.base import SAE
from steer.sae.config import SAEConfig


class JumpReLUSAE(SAE):
    """JumpReLU SAE, SAELens architecture ``"jumprelu"``, with a ``threshold`` [d_sae].

    ``f = relu(pre) * (pre > threshold)``: SAELens' inference formula. For the usual
    non-negative thresholds this is ``pre * (pre > threshold)``; the ReLU only matters for a
    negative threshold, where SAELens still never outputs a negative activation.
    """

    architecture = "jumprelu"
    columnwise = True

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """``relu(pre) * (pre > threshold)``."""
        return jump_relu(pre, self.threshold)

    def activation_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The same formula with the thresholds of features ``idx``."""
        return jump_relu(pre, self.threshold[idx])


def jump_relu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``relu(pre) * (pre > threshold)``: SAELens's JumpReLU at inference."""
    return torch.relu(pre) * (pre > threshold).to(pre.dtype)
