"""What the family readers share: safe reading of ``.pt`` files, names in paths, and turning
a SAELens-style cfg dict into an :class:`SAEConfig`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig

_LAYER = re.compile(r"(?:^|[^a-z0-9])(?:layer|layers|l)[._-]?(\d+)(?=$|[^0-9])", re.IGNORECASE)

CONVERT_HINT = (
    'convert it where you trust its source: python -c "import torch, safetensors.torch as st; '
    "o = torch.load('{name}', weights_only=False); o = getattr(o, 'state_dict', lambda: o)(); "
    "st.save_file({{k: v.contiguous() for k, v in o.items() if torch.is_tensor(v)}}, "
    "'{stem}.safetensors')\" and give that file"
)


def load_torch_file(path: Path) -> dict[str, Any]:
    """The tensors of a ``.pt``/``.pth`` file, read with ``torch.load(weights_only=True)``
    (tensors, numbers, strings, lists and dicts only: steer never unpickles), or of the
    ``.safetensors`` file a user converted it to. A file that needs arbitrary pickled classes
    is a one-line SteerError saying how to convert it."""
    import torch

    if path.suffix == ".safetensors":
        from steer.sae.configs import open_safetensors

        with open_safetensors(path) as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    try:
        if path.stat().st_size == 0:
            raise SteerError("is empty, not a PyTorch file", where=str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except SteerError:
        raise
    except OSError as exc:
        raise SteerError(f"cannot read it: {exc.strerror or exc}", where=str(path)) from None
    except Exception as exc:  # torch.load raises many kinds for a damaged or foreign file
        text = str(exc).split("WeightsUnpickler error:")[-1]  # torch's own reason, not its preamble
        reason = (text.strip().splitlines() or [type(exc).__name__])[0]
        # A file torch.load could unpickle but weights_only refuses names the classes it
        # holds; anything else (garbage, a truncated archive) is simply unreadable.
        if "weights_only" in str(exc) and "Unsupported global" in str(exc):
            hint = CONVERT_HINT.format(name=path.name, stem=path.stem)
            raise SteerError(
                f"holds pickled Python objects, not just tensors, and steer never unpickles; "
                f"{hint}",
                where=str(path),
            ) from None
        raise SteerError(f"not a readable PyTorch file ({reason})", where=str(path)) from None
    if not isinstance(data, dict):
        raise SteerError(
            f"holds a {type(data).__name__}, not a dictionary of tensors", where=str(path)
        )
    return data


def layer_in_name(*names: str) -> int | None:
    """The layer a path segment names (``layer_20``, ``layer3.sae.pt``, ``l19``,
    ``layers.7``), trying ``names`` in order; ``None`` if none does."""
    for name in names:
        if (m := _LAYER.search(name)) is not None:
            return int(m.group(1))
    return None


def family_config(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> SAEConfig:
    """The :class:`SAEConfig` of a SAELens-style cfg dict that a family reader built, after
    the release list's ``overrides`` (which win)."""
    from steer.sae.configs import apply_overrides, saelens_config

    return saelens_config(apply_overrides(raw, overrides), where)


def require_tensors(tensors: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    """A one-line SteerError unless every key of ``names`` is in ``tensors``."""
    for name in names:
        if name not in tensors:
            have = ", ".join(sorted(map(str, tensors))) or "none"
            raise SteerError(f"tensor {name!r} is missing (has: {have})", where=where)
