"""SAE architectures by name: the built-ins plus those plugins register."""

from __future__ import annotations

from typing import Any

from steer.registries import build_registry
from steer.sae.base import SAE
from steer.sae.jumprelu import JumpReLUSAE
from steer.sae.standard import StandardSAE
from steer.sae.topk import TopKSAE

BUILTIN_ARCHITECTURES: tuple[type[SAE], ...] = (StandardSAE, TopKSAE, JumpReLUSAE)


def _validate(obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, SAE)):
        raise TypeError(f"{obj!r} is not a subclass of steer.sae.base.SAE")
    name = getattr(obj, "architecture", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{obj.__name__} needs a non-empty str class attribute `architecture`")


def get_architectures(pm: Any = None) -> dict[str, type[SAE]]:
    """Architecture name (cfg.json ``architecture``) -> SAE class.

    With ``pm=None`` only the built-ins (``standard``, ``topk``, ``jumprelu``); with a plugin
    manager, also every class its plugins register through
    ``steer_register_sae_architectures``. A name registered twice raises
    :class:`~steer.errors.SteerError` naming both plugins.
    """
    registry = build_registry(
        pm,
        "steer_register_sae_architectures",
        kind="SAE architecture",
        name_of=lambda cls: cls.architecture,
        validate=_validate,
        builtins=BUILTIN_ARCHITECTURES,
    )
    return {name: entry.obj for name, entry in registry.items()}
