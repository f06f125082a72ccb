"""The TopK SAE: per position, only the k largest pre-activations survive (then ReLU)."""

from __future__ import annotations

import torch

from steer.sae.base import SAE
from steer.sae.config import SAEConfig, check_topk


class TopKSAE(SAE):
    """TopK SAE, SAELens architecture ``"topk"``; ``k`` comes from cfg.json (required).

    As in SAELens: take the top k pre-activations, ReLU them, zero every other feature.
    Not columnwise: whether a feature is on depends on all the others, so
    :meth:`encode_features` runs the full encode. A feature's ReLU'd pre-activation is an
    upper bound on its activation (equal when it is in the top k), which monitors use to
    encode only their own columns on most tokens.
    """

    architecture = "topk"

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        """Also require ``1 <= k <= d_sae``."""
        super().check_config(cfg)
        check_topk(cfg)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Keep the k largest of ``pre`` (ReLU'd), zero the rest."""
        return topk_relu(pre, self.cfg.k)

    def activation_bound_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """ReLU of the features' own pre-activations: the activation if in the top k, else 0."""
        return torch.relu(pre)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest of ``pre`` along the last axis, ReLU'd, every other entry zero."""
    top = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
