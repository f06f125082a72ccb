"""A linear-probe baseline for the SAE monitors: logistic regression on one layer's residual
stream, pooled per text.

Each text becomes one vector: the mean (or max) of the residual stream after block ``layer``
over the positions an SAE of that layer would see (position 0, special tokens and norm
outliers skipped, as in :mod:`steer.features.encode`). Features are standardised with the
training set's mean and standard deviation; the classifier is L2-regularised logistic
regression fitted full-batch with L-BFGS. A probe file keeps the weights, the standardisation
and where it came from (model, layer, pooling, sha256 of the training files).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steer.errors import SteerError
from steer.features.encode import BatchEncoder

POOLINGS = ("mean", "max")
FORMAT = "steer-probe-1"
_TENSORS = ("weight", "bias", "mean", "std")


class ResidualEncoder(BatchEncoder):
    """A :class:`~steer.features.encode.BatchEncoder` without an SAE: it yields the residual
    stream itself (zero where a position is not kept), so :func:`encode_texts` can batch,
    pad and filter texts for the probe exactly as it does for SAE features."""

    def __init__(self, model: Any, layer: int, *, outlier_factor: float = 10.0):
        from steer.model.positions import CollectStats, OutlierFilter, special_token_ids

        # BatchEncoder reads the layer and width from its SAE; a probe has none.
        self.model = model
        from steer.model.sites import Hook

        self.sae = None
        self.layer = int(layer)
        self.hook = Hook.at("resid_post", self.layer)
        self.special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
        self.outliers = OutlierFilter(outlier_factor)
        self.stats = CollectStats()
        self.features = None
        self.width = int(model.d_model)

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, keep = self.hidden_and_keep(ids)
        return hidden * keep.unsqueeze(-1), keep


def pooled_residuals(
    model: Any,
    layer: int,
    texts: Sequence[str],
    *,
    ctx_len: int = 128,
    batch: int = 8,
    progress: bool = True,
    desc: str = "residuals",
) -> dict[str, torch.Tensor]:
    """``{"mean": [n, d_model], "max": [n, d_model]}``: each text's residual stream after block
    ``layer`` pooled over its kept positions (zeros for a text with none)."""
    from steer.features.encode import pool_texts

    if not 0 <= layer < int(model.n_layers):
        raise SteerError(f"layer {layer} is out of range (the model has {model.n_layers})")
    return pool_texts(
        model,
        None,
        texts,
        pools=("mean", "max"),
        encoder=ResidualEncoder(model, layer),
        ctx_len=ctx_len,
        batch=batch,
        progress=progress,
        desc=desc,
    )


@dataclass
class Probe:
    """A trained probe: ``logit = ((x - mean) / std) @ weight + bias``."""

    weight: torch.Tensor  # [d]
    bias: torch.Tensor  # [1]
    mean: torch.Tensor  # [d]
    std: torch.Tensor  # [d]
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The probe's logit of each row of ``x`` ``[n, d]`` (positive: the ``--pos`` class)."""
        z = (x.to(self.weight.dtype) - self.mean) / self.std
        return z @ self.weight + self.bias


def train_probe(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
    meta: dict[str, Any] | None = None,
) -> Probe:
    """Fit logistic regression separating ``pos`` ``[n_pos, d]`` from ``neg`` ``[n_neg, d]``.

    The loss is class-balanced binary cross-entropy (each class weighs one half, so unequal set
    sizes do not shift the decision) plus ``l2 * |w|^2`` on the standardised weights.
    Deterministic: full-batch L-BFGS from zero.
    """
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise SteerError("a probe needs at least one positive and one negative text")
    x = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.shape[0])]).double()
    sample_w = torch.where(y > 0, 0.5 / pos.shape[0], 0.5 / neg.shape[0]).double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)  # constant columns: no division by 0
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", history_size=20
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")
        loss = (bce * sample_w).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return Probe(
        weight=w.detach().float(),
        bias=b.detach().float(),
        mean=mean.float(),
        std=std.float(),
        meta=dict(meta or {}),
    )


def save_probe(probe: Probe, path: str | Path) -> Path:
    """Write ``probe`` atomically as ``.safetensors`` (metadata in the header) or ``.json``."""
    from steer.io import atomic_path, atomic_write_text

    path = Path(path)
    tensors = {name: getattr(probe, name).contiguous() for name in _TENSORS}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(
                tensors, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(probe.meta)}
            )
    elif path.suffix == ".json":
        record = {"format": FORMAT, "meta": probe.meta}
        record.update({name: t.tolist() for name, t in tensors.items()})
        atomic_write_text(path, json.dumps(record) + "\n")
    else:
        raise SteerError("a probe file ends in .safetensors or .json", where=str(path))
    return path


def load_probe(path: str | Path) -> Probe:
    """Read a probe written by :func:`save_probe`; anything else is a one-line
    :class:`SteerError`."""
    path = Path(path)
    if path.is_dir():
        raise SteerError("is a folder, where a probe file is needed", where=str(path))
    if not path.is_file():
        raise SteerError("probe file not found", where=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            fmt, meta = header.get("format"), json.loads(header.get("meta", "null"))
        elif path.suffix == ".json":
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            fmt, meta = record.get("format"), record.get("meta")
            tensors = {
                k: torch.tensor(record[k], dtype=torch.float32) for k in _TENSORS if k in record
            }
        else:
            raise SteerError("a probe file ends in .safetensors or .json", where=str(path))
    except SteerError:
        raise
    except Exception as exc:  # a corrupt file: safetensors, JSON and torch all raise their own
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerError(f"not a readable probe file ({first})", where=str(path)) from None
    if fmt != FORMAT or not isinstance(meta, dict):
        raise SteerError(f"not a steer probe file (format {fmt!r})", where=str(path))
    missing = [k for k in _TENSORS if k not in tensors]
    if missing:
        raise SteerError(f"probe file lacks {', '.join(missing)}", where=str(path))
    d = tensors["weight"].shape
    if len(d) != 1 or tensors["mean"].shape != d or tensors["std"].shape != d:
        raise SteerError("probe file tensors have inconsistent shapes", where=str(path))
    if tensors["bias"].shape != (1,):
        raise SteerError("probe file bias is not a single number", where=str(path))
    return Probe(**{k: tensors[k].float() for k in _TENSORS}, meta=meta)


def check_probe_fits(
    probe: Probe,
    *,
    model_name: str | None = None,
    layer: int | None = None,
    d_model: int | None = None,
    where: str,
) -> int:
    """The probe's layer, after checking that it was trained on ``model_name``, on ``layer``
    and on a model of width ``d_model`` (each only when given). Cheap: run it before loading
    the model with ``model_name``/``layer``, and again after with ``d_model``."""
    meta = probe.meta
    p_layer = meta.get("layer")
    if not isinstance(p_layer, int):
        raise SteerError("probe file does not say its layer", where=where)
    if layer is not None and layer != p_layer:
        raise SteerError(f"the probe was trained on layer {p_layer}, not {layer}", where=where)
    if model_name is not None and meta.get("model") != model_name:
        raise SteerError(
            f"the probe was trained on model {meta.get('model')!r}, not {model_name!r}",
            where=where,
        )
    if d_model is not None and probe.weight.shape[0] != d_model:
        raise SteerError(
            f"the probe reads {probe.weight.shape[0]} dimensions; the model has {d_model}",
            where=where,
        )
    return p_layer
