"""SAE architectures by name: the built-ins plus those plugins register."""

from __future__ import annotations

from typing import Any

from steer.plugins.registry import RegistryKind, registry
from steer.sae.base import SAE
from steer.sae.gated import GatedSAE
from steer.sae.jumprelu import JumpReLUSAE
from steer.sae.standard import StandardSAE
from steer.sae.topk import TopKSAE
from steer.sae.transcoder import (
    JumpReLUSkipTranscoder,
    JumpReLUTranscoder,
    SkipTranscoder,
    TopKSkipTranscoder,
    TopKTranscoder,
    Transcoder,
)

BUILTIN_ARCHITECTURES: tuple[type[SAE], ...] = (
    StandardSAE,
    TopKSAE,
    JumpReLUSAE,
    GatedSAE,
    Transcoder,
    SkipTranscoder,
    JumpReLUTranscoder,
    JumpReLUSkipTranscoder,
    TopKTranscoder,
    TopKSkipTranscoder,
)

SAE_ARCHITECTURES: RegistryKind[type[SAE]] = RegistryKind(
    hook="steer_register_sae_architectures",
    kind="SAE architecture",
    expected=SAE,
    name_attr="architecture",
    classes=True,
    builtins=lambda: BUILTIN_ARCHITECTURES,
)


def get_architectures(pm: Any = None) -> dict[str, type[SAE]]:
    """Architecture name (cfg.json ``architecture``) -> SAE class.

    With ``pm=None`` only the built-ins (``standard``, ``topk``, ``jumprelu``, ``gated`` and
    the transcoders); with a plugin
    manager, also every class its plugins register through
    ``steer_register_sae_architectures``. A name registered twice raises
    :class:`~steer.errors.SteerError` naming both plugins.
    """
    return registry(pm, SAE_ARCHITECTURES).objects()
