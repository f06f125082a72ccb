"""PCA and ICA bases of the residual stream at a layer, fitted on unrelated text: the seed
paper's baselines for editing precision (how many directions it takes to remove a behaviour,
and at what cost), beside the SAE's features and the residual stream's neurons.

Both are fitted on the kept positions (not position 0, special tokens or norm outliers) of
``tokens`` tokens of text, with ``components`` directions each: PCA's top principal
components; ICA's independent components (scikit-learn's FastICA with unit-variance
whitening), which need not be orthogonal, so each node reads with the unmixing row and writes
with the mixing column.
"""

from __future__ import annotations

from typing import Any

import torch

from steer.errors import SteerError
from steer.model.positions import OutlierFilter, keep_mask, special_token_ids
from steer.pinpoint.nodes import LinearBasis
from steer.pinpoint.side_effects import load_windows

KINDS = ("pca", "ica")


def fit_linear_bases(
    model: Any,
    layer: int,
    kinds: list[str],
    *,
    data: str,
    tokens: int,
    components: int,
    seed: int = 0,
) -> list[LinearBasis]:
    """One :class:`LinearBasis` per kind in ``kinds`` at block ``layer``'s output."""
    if not kinds:
        return []
    x = kept_hidden(model, layer, load_windows(model, data, tokens))
    k = min(components, x.shape[1])
    if x.shape[0] < 2 * k:
        raise SteerError(
            f"{x.shape[0]} usable tokens of baseline text are too few for {k} components "
            "(give more baseline_tokens or fewer baseline_components)"
        )
    return [linear_basis(kind, x, k, seed) for kind in kinds]


def linear_basis(kind: str, x: torch.Tensor, k: int, seed: int = 0) -> LinearBasis:
    """The ``pca`` or ``ica`` basis of ``k`` directions fitted on tokens ``x`` ``[N, d]``."""
    if kind == "ica":
        return _ica(x, k, seed)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return LinearBasis("pca", v[:k], v[:k], mean)


def kept_hidden(model: Any, layer: int, windows: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Block ``layer``'s output at the kept positions of ``windows``: ``[N, d]`` float32."""
    from steer.model.trace import layer_output

    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers = OutlierFilter(10.0)
    kept = []
    for i in range(0, len(windows), batch):
        ids = windows[i : i + batch]
        h = layer_output(model, layer, ids.to(model.device)).cpu()
        kept.append(h[keep_mask(ids, h, special, outliers)])
    return torch.cat(kept)


def _ica(x: torch.Tensor, k: int, seed: int) -> LinearBasis:
    try:
        from sklearn.decomposition import FastICA
    except ImportError:
        raise SteerError(
            "the ica baseline needs scikit-learn: pip install 'steer[bases]'"
        ) from None
    ica = FastICA(n_components=k, whiten="unit-variance", max_iter=400, random_state=seed)
    ica.fit(x.numpy())
    return LinearBasis(
        "ica",
        torch.tensor(ica.components_, dtype=torch.float32),
        torch.tensor(ica.mixing_.T, dtype=torch.float32),
        torch.tensor(ica.mean_, dtype=torch.float32),
    )
