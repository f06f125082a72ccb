"""Refusing an SAE config whose sizes its weights file cannot hold, from the file's size
alone: a cfg.json that claims a huge SAE must fail before anything is allocated."""

from __future__ import annotations

from pathlib import Path

from steer.errors import SteerError
from steer.sae.config import SAEConfig

# The fewest bytes a stored weight takes (float8, uint8): a weights file holding W_enc and
# W_dec, [d_in, d_sae] each, has at least 2 * d_in * d_sae bytes, whatever dtype it stores.
_MIN_BYTES_PER_WEIGHT = 1


def check_sizes(cfg: SAEConfig, weights: Path, latents: str, where: str) -> None:
    """Refuse sizes the weights file is too small to hold, from its size alone: a cfg.json
    that claims a huge SAE must fail here, not in the allocator. ``latents`` names d_sae's
    key in cfg.json."""
    if not weights.is_file():
        return  # load_sae reports the missing file; the config alone is still readable
    have = weights.stat().st_size
    need = 2 * cfg.d_in * cfg.d_sae * _MIN_BYTES_PER_WEIGHT
    if need <= have:
        return
    from steer.sae.configs import open_safetensors  # configs imports this module

    with open_safetensors(weights):  # a truncated or corrupt file: say so, not "too large"
        pass
    # Name the key that is absurd on its own (the other being at least 1), else both.
    sizes = {"d_in": cfg.d_in, latents: cfg.d_sae}
    blamed = [f"{k} {v}" for k, v in sizes.items() if 2 * v * _MIN_BYTES_PER_WEIGHT > have]
    blamed = blamed or [f"{k} {v}" for k, v in sizes.items()]
    verb = "is" if len(blamed) == 1 else "are"
    raise SteerError(
        f"{' and '.join(blamed)} {verb} too large: the weights would take at least "
        f"{_human_bytes(need)}, but {weights.name} is only {_human_bytes(have)}",
        where=where,
    )


def _human_bytes(n: float) -> str:
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.3g} {unit}"
    return f"{n / 1000:.3g} TB"
