"""Transcoders: an encoder that reads one site (e.g. the MLP's input) and a decoder that writes
another (the MLP's output): SAELens's ``transcoder``, ``skip_transcoder``,
``jumprelu_transcoder`` and ``jumprelu_skip_transcoder``, and sparsify's TopK transcoders.

The config's ``hook_name`` is the site read, ``hook_name_out`` the site written; ``d_out`` is
the written width. ``b_dec`` lives at the output, so it is never subtracted from the input
(the config check refuses ``apply_b_dec_to_input``). Each activation is its SAE's: a transcoder
is that SAE with its output elsewhere, so the classes below only name the architecture.
"""

from __future__ import annotations

import torch

from steer.sae.config import SAEConfig
from steer.sae.jumprelu import JumpReLUSAE
from steer.sae.standard import StandardSAE
from steer.sae.topk import TopKSAE


class SkipPath:
    """A linear skip path from the input to the output site, ``W_skip`` ``[d_out, d_in]``:
    output ``f @ W_dec + b_dec + x @ W_skip.T`` (Gemma Scope 2's affine transcoders, sparsify's
    ``skip_connection``). Mixed in before the transcoder class."""

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        width = cfg.output_width
        self.W_skip = torch.nn.Parameter(torch.zeros(width, cfg.d_in, dtype=cfg.torch_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The features' output plus the skip path's."""
        return super().forward(x) + x.to(self.W_skip.dtype) @ self.W_skip.T


class Transcoder(StandardSAE):
    """ReLU transcoder: ``f = relu(x @ W_enc + b_enc)``, output ``f @ W_dec + b_dec``."""

    architecture = "transcoder"


class SkipTranscoder(SkipPath, Transcoder):
    """A ReLU transcoder with the linear skip path."""

    architecture = "skip_transcoder"


class JumpReLUTranscoder(JumpReLUSAE):
    """A transcoder whose features are on only above their own ``threshold``."""

    architecture = "jumprelu_transcoder"


class JumpReLUSkipTranscoder(SkipPath, JumpReLUTranscoder):
    """A JumpReLU transcoder with the linear skip path (Gemma Scope 2's affine transcoders)."""

    architecture = "jumprelu_skip_transcoder"


class TopKTranscoder(TopKSAE):
    """A TopK transcoder (EleutherAI sparsify's ``transcode: true``). steer's own architecture
    name: SAELens has no TopK transcoder, so ``steer sae convert`` writes a cfg.json only steer
    reads."""

    architecture = "topk_transcoder"


class TopKSkipTranscoder(SkipPath, TopKTranscoder):
    """A TopK transcoder with sparsify's linear skip path (``skip_connection: true``)."""

    architecture = "topk_skip_transcoder"
