"""SAEs on disk: SAELens folders (v6 and the older flat cfg.json) and EleutherAI sparsify.

SAELens folder: ``cfg.json`` + ``sae_weights.safetensors`` (+ optional ``sparsity.safetensors``).
sparsify: ``<hookpoint>/cfg.json`` + ``<hookpoint>/sae.safetensors``, hookpoint ``layers.N``
being the residual stream after block N. steer writes SAELens v6 only.

Every problem with a folder is a one-line :class:`~steer.errors.SteerError` naming the path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from steer.errors import SteerError
from steer.io import atomic_dir
from steer.sae.base import SAE, construct, dtype_name
from steer.sae.config import SAEConfig
from steer.sae.configs import (
    CFG_FILENAME,
    DEDICATED,
    SAE_LENS_VERSION,
    SAVE_DEFAULTS,
    SPARSIFY_WEIGHTS,
    SPARSITY_FILENAME,
    WEIGHTS_FILENAME,
    architecture_class,
    open_safetensors,
    read_config,
    read_sae_config,
)
from steer.sae.fit import check_fits_model

__all__ = [
    "CFG_FILENAME",
    "SAE_LENS_VERSION",
    "SPARSIFY_WEIGHTS",
    "SPARSITY_FILENAME",
    "WEIGHTS_FILENAME",
    "check_fits_model",
    "load_sae",
    "read_sae_config",
    "save_sae",
]


def _read_tensors(
    file: Path, expected: dict[str, tuple[int, ...]], says: str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The tensors ``expected`` names, cast to ``dtype``, after checking from the file's header
    (no data read) that each is there with the right shape, and then that every value is
    finite."""
    with open_safetensors(file) as f:
        keys = set(f.keys())
        extra = keys - set(expected)
        for name, shape in expected.items():
            if name not in keys:
                have = ", ".join(sorted(keys)) or "none"
                raise SteerError(f"tensor {name!r} is missing (has: {have})", where=str(file))
            actual = list(f.get_slice(name).get_shape())
            if actual != list(shape):
                raise SteerError(
                    f"{name} has shape {actual}, cfg.json says {says} (expected {list(shape)})",
                    where=str(file),
                )
        # Old SAELens files may carry an all-ones scaling_factor, which SAELens drops too.
        if "scaling_factor" in extra and bool((f.get_tensor("scaling_factor") == 1).all()):
            extra.discard("scaling_factor")
        if extra:
            raise SteerError(f"unexpected tensors: {', '.join(sorted(extra))}", where=str(file))
        tensors = {}
        for name in expected:
            try:
                stored = f.get_tensor(name)
            except (safetensors.SafetensorError, OSError) as exc:
                first = str(exc).splitlines()[0]
                raise SteerError(f"cannot read tensor data ({first})", where=str(file)) from None
            _check_finite(stored, name, file, "")
            tensors[name] = stored.to(dtype)
            if tensors[name] is not stored:
                # A value too large for the dtype the SAE computes in becomes inf when cast.
                _check_finite(tensors[name], name, file, f" once cast to {dtype_name(dtype)}")
        return tensors


def _check_finite(tensor: torch.Tensor, name: str, file: Path, cast: str) -> None:
    """Refuse a tensor holding NaN or infinity: such an SAE would load and then turn every
    steered activation into NaN, with nothing saying why."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    raise SteerError(f"{name} holds {bad} NaN/inf values{cast}", where=str(file))


def _skeleton(cls: type[SAE], cfg: SAEConfig, where: str) -> SAE:
    """``cls(cfg)`` with its parameters on the meta device: their shapes, for checking the
    weights file's header against, and no memory, so a cfg.json that claims a huge SAE
    cannot exhaust it before the file is checked."""
    try:
        with torch.device("meta"):
            return construct(cls, cfg, where=where)
    except (RuntimeError, NotImplementedError):
        # A plugin whose __init__ computes on its own tensors cannot run on meta. read_config
        # has bounded the sizes by the weights file's, so building it for real is safe.
        return construct(cls, cfg, where=where)


def _on_meta(sae: SAE) -> list[str]:
    """Tensors of ``sae`` still on the meta device: parameters, buffers (non-persistent ones
    too) and plain tensor attributes that __init__ computed."""
    named = [*sae.named_parameters(), *sae.named_buffers()]
    for prefix, module in sae.named_modules():
        named += [
            (f"{prefix}.{key}".lstrip("."), value)
            for key, value in vars(module).items()
            if isinstance(value, torch.Tensor)
        ]
    return [name for name, tensor in named if tensor.is_meta]


def load_sae(
    path: str | Path,
    *,
    pm: Any = None,
    device: str | torch.device = "cpu",
    overrides: dict[str, Any] | None = None,
) -> SAE:
    """Load the SAE at ``path``: an SAELens folder (v6 or pre-6.0 cfg.json), a sparsify
    hookpoint folder (or a folder holding exactly one), or a file or folder in one of the
    layouts of :mod:`steer.sae.families` (GemmaScope, Llama Scope, dictionary_learning, ...).

    ``overrides`` are SAELens cfg keys from a release list; they win over the files'.
    Weights are cast to the config's dtype and moved to ``device``; settings that are a fixed
    rescaling (``expected_average_only_in``, ``rescale_acts_by_decoder_norm``) are folded into
    them (:meth:`SAE.fold_for_inference`). ``pm`` supplies plugin architectures (built-ins
    only when ``None``). Anything wrong raises a one-line :class:`SteerError` naming the file
    and the problem, before the size of the SAE is allocated where the file's header can tell:
    sizes the weights file cannot hold, tensors missing or of the wrong shape, and weights that
    hold NaN or infinity.
    """
    located = read_config(path, pm, overrides)
    cfg, folder = located.cfg, located.path
    where = str(folder / CFG_FILENAME) if located.layout in ("saelens", "sparsify") else str(folder)
    cls = architecture_class(cfg, pm, where=where)
    sae = _skeleton(cls, cfg, where)
    expected = {name: tuple(t.shape) for name, t in sae.state_dict().items()}
    if located.layout in ("saelens", "sparsify"):
        tensors = _read_folder(located, expected)
    else:
        tensors = _read_family(located, expected)
    # assign: the file's tensors become the parameters, replacing the meta placeholders.
    sae.load_state_dict(tensors, strict=True, assign=True)
    if _on_meta(sae):
        # Something the file does not hold (a non-persistent buffer, a tensor computed in
        # __init__) is still a placeholder: build the module for real, now that the file has
        # matched the config, and load into that, as steer always did.
        sae = construct(cls, cfg, where=where)
        sae.load_state_dict(tensors, strict=True, assign=True)
    sae.fold_for_inference()
    return sae.to(device)


def _read_folder(located: Any, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The tensors of an SAELens or sparsify folder, checked against ``expected`` shapes."""
    cfg, folder = located.cfg, located.path
    is_sparsify = located.layout == "sparsify"
    file = folder / (SPARSIFY_WEIGHTS if is_sparsify else WEIGHTS_FILENAME)
    if not file.is_file():
        raise SteerError(f"weights file {file.name} is missing", where=str(folder))
    dtype = cfg.torch_dtype
    if not is_sparsify:
        return _read_tensors(file, expected, f"d_in={cfg.d_in}, d_sae={cfg.d_sae}", dtype)
    n, d = cfg.d_sae, cfg.d_in
    wanted = {"encoder.weight": (n, d), "encoder.bias": (n,), "W_dec": (n, d), "b_dec": (d,)}
    if "W_skip" in expected:  # a transcoder's skip path, [d_out, d_in] in both libraries
        wanted["W_skip"] = (d, d)
    raw = _read_tensors(file, wanted, f"d_in={d}, num_latents={n}", dtype)
    raw["W_enc"] = raw.pop("encoder.weight").T.contiguous()  # sparsify stores it [n, d_in]
    raw["b_enc"] = raw.pop("encoder.bias")
    return raw


def _read_family(located: Any, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The tensors a family reader gives, checked against ``expected`` shapes and values and
    cast to the config's dtype."""
    from steer.sae.families import family_named

    where = str(located.path)
    tensors = family_named(located.layout).read_tensors(located.path, located.cfg)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise SteerError(f"tensor {missing[0]!r} is missing", where=where)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise SteerError(f"unexpected tensors: {', '.join(extra)}", where=where)
    dtype = located.cfg.torch_dtype
    out = {}
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise SteerError(
                f"{name} has shape {list(tensor.shape)}, the config says {list(shape)}",
                where=where,
            )
        _check_finite(tensor, name, located.path, "")
        out[name] = tensor.to(dtype).contiguous()
        if out[name] is not tensor:
            _check_finite(out[name], name, located.path, f" once cast to {dtype_name(dtype)}")
    return out


def _saelens_cfg_json(cfg: SAEConfig, extra_metadata: dict[str, Any] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {key: getattr(cfg, key) for key in DEDICATED}
    metadata.update(SAVE_DEFAULTS)
    metadata.update(cfg.metadata)
    metadata.update(extra_metadata or {})
    metadata.update({key: getattr(cfg, key) for key in DEDICATED})  # the config's own win
    metadata["sae_lens_version"] = SAE_LENS_VERSION
    out: dict[str, Any] = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        **({"d_out": cfg.d_out} if cfg.d_out is not None else {}),
        "dtype": dtype_name(cfg.torch_dtype),
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": "none",
        "metadata": metadata,
        "architecture": cfg.architecture,
    }
    if cfg.k is not None:
        out["k"] = cfg.k
    if cfg.rescale_acts_by_decoder_norm:
        out["rescale_acts_by_decoder_norm"] = True
    return out


def save_sae(
    sae: SAE,
    path: str | Path,
    *,
    sparsity: torch.Tensor | None = None,
    extra_metadata: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``sae`` to the folder ``path`` in SAELens v6 format, atomically.

    ``cfg.json`` (with ``metadata.sae_lens_version``, so SAELens reads the hook names) and
    ``sae_weights.safetensors`` in the config's dtype, or in ``storage_dtype`` when given (e.g.
    ``torch.float16`` halves the file; loading casts back to the config's dtype, which is the
    dtype the SAE computes in); ``sparsity.safetensors`` (key
    ``sparsity``: log10 feature density) when ``sparsity`` is given. ``extra_metadata`` keys
    are added to ``metadata``. An existing SAE at ``path`` is replaced only once the new one
    is complete (other files in its folder are kept); a folder that holds no SAE is refused.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise SteerError("exists and is not a folder; refusing to replace it", where=str(target))
    if target.is_dir() and any(target.iterdir()) and not (target / CFG_FILENAME).is_file():
        raise SteerError(
            f"is a folder with no {CFG_FILENAME}; refusing to replace it", where=str(target)
        )
    text = json.dumps(_saelens_cfg_json(sae.cfg, extra_metadata), indent=2) + "\n"
    dtype = storage_dtype or sae.cfg.torch_dtype
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sae.state_dict().items()}
    ours = {CFG_FILENAME, WEIGHTS_FILENAME, SPARSITY_FILENAME}
    try:
        with atomic_dir(target) as tmp:
            safetensors.torch.save_file(tensors, str(tmp / WEIGHTS_FILENAME))
            if sparsity is not None:
                log_density = sparsity.detach().to("cpu", torch.float32).contiguous()
                safetensors.torch.save_file({"sparsity": log_density}, str(tmp / SPARSITY_FILENAME))
            (tmp / CFG_FILENAME).write_text(text, encoding="utf-8")
            if target.is_dir():  # keep what else lives beside the SAE (notes, eval reports)
                for child in target.iterdir():
                    if child.name not in ours:
                        copy = shutil.copytree if child.is_dir() else shutil.copy2
                        copy(child, tmp / child.name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SteerError(f"cannot save the SAE: {reason}", where=str(target)) from exc
    return target
