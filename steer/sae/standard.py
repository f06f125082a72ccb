"""The standard (ReLU) SAE: ``f = relu(pre)``."""

from __future__ import annotations

import torch

from steer.sae.base import SAE


class StandardSAE(SAE):
    """ReLU SAE, SAELens architecture ``"standard"``."""

    architecture = "standard"
    columnwise = True

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """``relu(pre)``."""
        return torch.relu(pre)

    def activation_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``relu(pre)``: each feature depends only on its own pre-activation."""
        return torch.relu(pre)
