"""Transcoders: an encoder that reads one site (e.g. the MLP's input) and a decoder that writes
another (the MLP's output), SAELens architectures ``transcoder``, ``skip_transcoder`` and
``jumprelu_transcoder``.

The config's ``hook_name`` is the site read, ``hook_name_out`` the site written; ``d_out`` is
the written width. ``b_dec`` lives at the output, so it is never subtracted from the input.
"""

from __future__ import annotations

import torch

from steer.sae.base import SAE
from steer.sae.config import SAEConfig, check_topk
from steer.sae.jumprelu import jump_relu
from steer.sae.topk import topk_relu


class Transcoder(SAE):
    """ReLU transcoder: ``f = relu(x @ W_enc + b_enc)``, output ``f @ W_dec + b_dec``."""

    architecture = "transcoder"
    columnwise = True

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """``relu(pre)``."""
        return torch.relu(pre)

    def activation_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``relu(pre)``: each feature depends only on its own pre-activation."""
        return torch.relu(pre)


class SkipTranscoder(Transcoder):
    """A transcoder with a linear skip path (Gemma Scope 2's "affine" transcoders): output
    ``f @ W_dec + b_dec + x @ W_skip.T``, ``W_skip`` ``[d_out, d_in]``."""

    architecture = "skip_transcoder"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        width = cfg.output_width
        self.W_skip = torch.nn.Parameter(torch.zeros(width, cfg.d_in, dtype=cfg.torch_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The features' output plus the skip path's."""
        return super().forward(x) + x.to(self.W_skip.dtype) @ self.W_skip.T


class JumpReLUTranscoder(Transcoder):
    """A transcoder whose features are on only above their own ``threshold`` (as
    ``jumprelu``)."""

    architecture = "jumprelu_transcoder"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """``relu(pre) * (pre > threshold)``."""
        return jump_relu(pre, self.threshold)

    def activation_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The same formula with the thresholds of features ``idx``."""
        return jump_relu(pre, self.threshold[idx])


class JumpReLUSkipTranscoder(JumpReLUTranscoder, SkipTranscoder):
    """A JumpReLU transcoder with the linear skip path (Gemma Scope 2's affine transcoders)."""

    architecture = "jumprelu_skip_transcoder"


class TopKTranscoder(Transcoder):
    """A TopK transcoder (EleutherAI sparsify's ``transcode: true``): only the k largest
    pre-activations stay on (ReLU'd), as :class:`~steer.sae.topk.TopKSAE`. steer's own
    architecture name: SAELens has no TopK transcoder, so ``steer sae convert`` writes a
    cfg.json only steer reads."""

    architecture = "topk_transcoder"
    columnwise = False

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        """Also require ``1 <= k <= d_sae``."""
        super().check_config(cfg)
        check_topk(cfg)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Keep the k largest of ``pre`` (ReLU'd), zero the rest."""
        return topk_relu(pre, self.cfg.k)


class TopKSkipTranscoder(TopKTranscoder, SkipTranscoder):
    """A TopK transcoder with sparsify's linear skip path (``skip_connection: true``)."""

    architecture = "topk_skip_transcoder"
