"""Find an SAE by builtin name or folder, and load it together with the model it belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.errors import SteerError

DEFAULT_MODEL = "smollm2-135m-instruct"


def sae_folder(name_or_path: str | Path) -> Path:
    """The folder of an SAE given as a builtin name (``steer sae list``) or a folder path."""
    from steer.sae.sources import builtin_saes

    shipped = builtin_saes()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        known = ", ".join(shipped) or "none"
        raise SteerError(
            f"no SAE named {str(name_or_path)!r}: not a builtin (shipped: {known}) and not a folder"
        )
    return folder


def load_sae_only(name_or_path: str | Path, *, device: str = "cpu") -> tuple[Path, Any]:
    """``(folder, sae)`` for an SAE given by builtin name or folder (no model load)."""
    from steer.sae import load_sae

    folder = sae_folder(name_or_path)
    return folder, load_sae(folder, device=device)


def load_sae_and_model(
    name_or_path: str | Path, *, model: str = DEFAULT_MODEL, device: str | None = None
) -> tuple[Path, Any, Any]:
    """``(folder, sae, loaded_model)``: the SAE, the model it reads, checked to fit each other.

    The SAE's ``layer`` (from its hook name) must exist in the model and its ``d_in`` must
    match the model's width; anything else is a one-line :class:`SteerError`.
    """
    from steer.model import load_model
    from steer.sae import check_fits_model

    folder, sae = load_sae_only(name_or_path)
    lm = load_model(model, device=device)
    check_fits_model(sae, d_model=lm.d_model, n_layers=lm.n_layers, where=str(folder))
    return folder, sae.to(lm.device), lm
