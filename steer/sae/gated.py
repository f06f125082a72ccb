"""The gated SAE (Rajamanoharan et al. 2024): a gate decides which features are on, a
magnitude path (the same encoder, rescaled per feature) decides how much."""

from __future__ import annotations

import torch

from steer.sae.base import SAE
from steer.sae.config import SAEConfig


class GatedSAE(SAE):
    """Gated SAE, SAELens architecture ``"gated"``: parameters ``b_gate``, ``r_mag``, ``b_mag``
    instead of ``b_enc``::

        gate = sae_in @ W_enc + b_gate
        mag  = sae_in @ (W_enc * exp(r_mag)) + b_mag
        f    = (gate > 0) * relu(mag)

    Not columnwise in steer (the full encode runs and the columns are picked), so that a few
    features read alone give exactly the bits of the full encode.
    """

    architecture = "gated"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        del self.b_enc  # the gate and the magnitude path have their own biases
        dtype = cfg.torch_dtype
        self.b_gate = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.r_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """The magnitude path's pre-activations (SAELens's ``hook_sae_acts_pre``)."""
        return self._sae_in(x) @ (self.W_enc * self.r_mag.exp()) + self.b_mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(gate > 0) * relu(mag)``."""
        sae_in = self._sae_in(x)
        active = (sae_in @ self.W_enc + self.b_gate > 0).to(sae_in.dtype)
        magnitude = sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return active * torch.relu(magnitude)
