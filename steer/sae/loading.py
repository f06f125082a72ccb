"""Load an SAE given by builtin name or folder, together with the model it belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.model import DEFAULT_MODEL
from steer.sae.sources import sae_folder


def load_sae_only(name_or_path: str | Path, *, device: str = "cpu") -> tuple[Path, Any]:
    """``(folder, sae)`` for an SAE given by builtin name or folder (no model load)."""
    from steer.sae import load_sae

    folder = sae_folder(name_or_path)
    return folder, load_sae(folder, device=device)


def load_sae_and_model(
    name_or_path: str | Path, *, model: str = DEFAULT_MODEL, device: str | None = None
) -> tuple[Path, Any, Any]:
    """``(folder, sae, loaded_model)``: the SAE, the model it reads, checked to fit each other.

    The SAE's site (from its hook names) must exist in the model and its ``d_in`` must match
    that site's width; anything else is a one-line :class:`SteerError`.
    """
    from steer.model import load_model
    from steer.sae.fit import check_fits_site, sae_hook

    folder, sae = load_sae_only(name_or_path)
    hook = sae_hook(sae, site=None, layer=None, where=str(folder))
    lm = load_model(model, device=device)
    check_fits_site(sae, hook, lm.hf.config, where=str(folder))
    return folder, sae.to(lm.device), lm
