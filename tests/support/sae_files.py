"""SAE files as the releases store them, for the family readers' tests: ``.pt`` state dicts,
the seeded weights of an SAE kept as two torch Linear layers, and the one-line errors steer
gives for bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steer.errors import SteerError
from steer.sae import load_sae


def save_pt(path: Path, tensors: Any) -> Path:
    """``torch.save`` of ``tensors`` (a state dict, or anything a bad file should hold) to
    ``path``, its folders made; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)
    return path


def linear_layers(
    d_in: int,
    d_sae: int,
    *,
    encoder: str = "encoder",
    decoder: str = "decoder",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    encoder_scale: float = 0.4,
) -> dict[str, torch.Tensor]:
    """Seeded weights of two torch Linear layers ``encoder`` (``.weight`` [d_sae, d_in],
    ``.bias``) and ``decoder`` (``.weight`` [d_in, d_sae], ``.bias``), in ``dtype``; the
    biases leave some features on and some off for randn inputs."""
    g = torch.Generator().manual_seed(seed)
    return {
        f"{encoder}.weight": (torch.randn(d_sae, d_in, generator=g) * encoder_scale).to(dtype),
        f"{encoder}.bias": (torch.randn(d_sae, generator=g) * 0.3 - 0.2).to(dtype),
        f"{decoder}.weight": (torch.randn(d_in, d_sae, generator=g) * 0.2).to(dtype),
        f"{decoder}.bias": (torch.randn(d_in, generator=g) * 0.1).to(dtype),
    }


def load_error(path: Path, match: str, **kwargs: Any) -> str:
    """The message of the SteerError ``load_sae(path, **kwargs)`` raises, after checking that it
    matches ``match`` and is one line."""
    with pytest.raises(SteerError, match=match) as err:
        load_sae(path, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


__all__ = ["linear_layers", "load_error", "save_pt"]


def write_npz(file, *, seed=0, keys=None, d_out=16, drop=(), extra=None, dtype=np.float32):
    """A params.npz in GemmaScope's layout (np.savez, float32, W_enc [d_in=16, d_sae=64]) with
    seeded weights whose thresholds leave some features on and some off for randn inputs."""
    rng = np.random.default_rng(seed)
    arrays = {
        "W_enc": rng.standard_normal((16, 64)) / 4,
        "W_dec": rng.standard_normal((64, d_out)) / 4,
        "b_enc": rng.standard_normal(64) / 10,
        "b_dec": rng.standard_normal(d_out) / 10,
        "threshold": np.abs(rng.standard_normal(64)) / 2 + 0.05,
        **(extra or {}),
    }
    arrays = {(keys or {}).get(k, k): v.astype(dtype) for k, v in arrays.items() if k not in drop}
    file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(file, **arrays)
    return file
