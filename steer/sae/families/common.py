"""What the family readers share: safe reading of ``.pt`` files, tensor shapes without the
weights, names in paths (layers, Hugging Face cache folders), SAEs stored as two torch Linear
layers, and turning a SAELens-style cfg dict into an :class:`SAEConfig`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.sae.config import SAEConfig
from steer.sae.configs import safetensors_header

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


def load_required_tensors(file: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Every tensor of ``file`` (:func:`load_torch_file`), after checking that each of
    ``names`` is there (:func:`require_tensors`)."""
    tensors = load_torch_file(file)
    require_tensors(tensors, names, str(file))
    return tensors


def header_shapes(header: dict[str, Any]) -> dict[str, Any]:
    """``name -> shape`` of each tensor a safetensors ``header`` lists (``__metadata__`` left
    out). A shape is kept as the header gives it (``None`` where it gives none), so that a
    malformed header meets the caller's shape check rather than a crash here."""
    return {
        key: value.get("shape")
        for key, value in header.items()
        if key != "__metadata__" and isinstance(value, dict)
    }


def tensor_shapes_in(file: Path) -> dict[str, Any]:
    """``name -> shape`` of each tensor in ``file``: from a ``.safetensors`` header (no torch,
    no weights read), else by loading the ``.pt`` file (tensors only, never unpickling)."""
    if file.suffix == ".safetensors":
        return header_shapes(safetensors_header(file))
    return {k: list(v.shape) for k, v in load_torch_file(file).items() if hasattr(v, "shape")}


def hf_cache_entry(path: Path) -> tuple[str, str] | None:
    """``(repo id, path inside the repo)`` of ``path`` when it lies in a Hugging Face cache
    folder (``models--Org--Name/snapshots/<revision>/...``), else ``None``; in the unlikely
    case of a cache inside a cache, the innermost."""
    # abspath, not resolve: a cached file is a symlink to a blob whose name says nothing.
    parts = Path(os.path.abspath(path)).parts
    found = None
    for i, part in enumerate(parts):
        pieces = part.split("--")
        if len(pieces) == 3 and pieces[0] == "models" and parts[i + 1 : i + 2] == ("snapshots",):
            found = f"{pieces[1]}/{pieces[2]}", "/".join(parts[i + 3 :])
    return found


def hf_cache_repo(path: Path) -> str | None:
    """The repo id of the Hugging Face cache folder holding ``path`` (``models--Org--Name``
    -> ``Org/Name``), or ``None`` (see :func:`hf_cache_entry`)."""
    entry = hf_cache_entry(path)
    return entry[0] if entry is not None else None


def linear_sizes(
    shapes: dict[str, Any], names: tuple[str, str, str, str], where: str
) -> tuple[int, int]:
    """``(d_in, d_sae)`` of an SAE stored as two torch Linear layers, from the ``shapes`` of
    its tensors ``names`` (encoder weight ``[d_sae, d_in]``, encoder bias, decoder weight
    ``[d_in, d_sae]``, decoder bias), after checking that all four are there and agree."""
    encoder, encoder_bias, decoder, decoder_bias = names
    require_tensors(shapes, names, where)
    if not isinstance(shapes[encoder], list) or len(shapes[encoder]) != 2:
        raise SteerError(
            f"{encoder} has shape {shapes[encoder]}, expected [d_sae, d_in]", where=where
        )
    d_sae, d_in = shapes[encoder]
    expected = {encoder_bias: [d_sae], decoder: [d_in, d_sae], decoder_bias: [d_in]}
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise SteerError(
                f"{name} has shape {shapes[name]}, expected {shape} ({encoder} is "
                f"[{d_sae}, {d_in}])",
                where=where,
            )
    return d_in, d_sae


def linear_weights(
    tensors: dict[str, Any], names: tuple[str, str, str, str], dtype: Any = None
) -> dict[str, Any]:
    """steer's ``W_enc``, ``W_dec``, ``b_enc`` and ``b_dec`` from the tensors ``names`` of two
    torch Linear layers (as in :func:`linear_sizes`): the weights transposed to steer's
    layouts, as SAELens's loaders do, and all cast to ``dtype`` unless it is ``None``."""
    encoder, encoder_bias, decoder, decoder_bias = names
    out = {
        "W_enc": tensors[encoder].T,
        "W_dec": tensors[decoder].T,
        "b_enc": tensors[encoder_bias],
        "b_dec": tensors[decoder_bias],
    }
    return out if dtype is None else {name: value.to(dtype) for name, value in out.items()}


# One file holding an SAE as two torch Linear layers (deepseek_r1, goodfire, qwenscope).


def linear_file_sizes(file: Path, names: tuple[str, str, str, str]) -> tuple[int, int]:
    """:func:`linear_sizes` of the tensors in ``file`` (:func:`tensor_shapes_in`)."""
    return linear_sizes(tensor_shapes_in(file), names, str(file))


def linear_file_weights(
    file: Path, names: tuple[str, str, str, str], dtype: Any = None
) -> dict[str, Any]:
    """:func:`linear_weights` of the tensors in ``file``, after checking they are there."""
    return linear_weights(load_required_tensors(file, names), names, dtype)


def linear_file_config(
    file: Path,
    sizes: tuple[int, int],
    overrides: dict[str, Any],
    *,
    dtype: str,
    metadata: dict[str, Any],
    architecture: str = "standard",
    **extra: Any,
) -> SAEConfig:
    """The config SAELens's loaders for such files build (:func:`family_config`): an SAE of
    ``sizes`` ``(d_in, d_sae)`` that does not subtract ``b_dec`` from its input and runs on
    unscaled inputs, with ``extra`` cfg keys (a TopK ``k``); ``file`` is named in errors."""
    d_in, d_sae = sizes
    raw = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": dtype, **extra}
    raw.update(apply_b_dec_to_input=False, normalize_activations="none", metadata=metadata)
    return family_config(raw, overrides, str(file))
