"""Which features fire on a text: per token, and over the whole text (max over its tokens)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from steer.errors import SteerError
from steer.features.encode import encode_texts
from steer.sae.labels import Label

MAX_TOKENS = 1024


@dataclass
class Hit:
    """A feature that fired: its id, activation, label name and density (when known)."""

    feature: int
    act: float
    label: str | None = None
    density: float | None = None
    token: str | None = None  # overall hits: the token where it fired most


@dataclass
class TokenHits:
    """One token of the text and the features strongest on it (none where it was not
    encoded: special tokens, position 0, outliers)."""

    position: int
    token: str
    encoded: bool
    features: list[Hit] = field(default_factory=list)


@dataclass
class SearchResult:
    """Per-token and overall features of a text."""

    text: str
    tokens: list[TokenHits]
    overall: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


RANKINGS = ("specific", "activation")
# The rarest density a weight assumes: a feature never seen firing in the index is not
# infinitely specific.
_DENSITY_FLOOR = 1e-6


def _weights(rank: str, densities: dict[int, float], n: int) -> torch.Tensor:
    """Per-feature ranking weights: 1, or ``log10(1 / density)`` for ``specific``."""
    weights = torch.ones(n)
    if rank == "specific" and densities:
        for fid, density in densities.items():
            if 0 <= fid < n:
                weights[fid] = math.log10(1.0 / max(density, _DENSITY_FLOOR))
    return weights


def search_text(
    model: Any,
    sae: Any,
    text: str,
    *,
    top: int = 10,
    per_token: int = 5,
    labels: dict[int, Label] | None = None,
    densities: dict[int, float] | None = None,
    rank: str = "specific",
    max_density: float | None = None,
) -> SearchResult:
    """Encode ``text`` (its first :data:`MAX_TOKENS` tokens) and rank its features.

    ``overall`` holds the ``top`` features of the text; each token lists its ``per_token``
    strongest features. ``labels`` and ``densities`` (from the feature index) annotate the hits
    when given. Ranking: ``activation`` by the max activation over the text; ``specific``
    (with densities) by that times ``log10(1 / density)``, so a feature that fires on a few
    tokens in a hundred thousand outranks one that fires on every other token at the same
    strength (without densities it is the activation). ``max_density`` leaves out features
    that fire more often than that everywhere.
    """
    if rank not in RANKINGS:
        raise SteerError(f"unknown ranking {rank!r} (choose from {', '.join(RANKINGS)})")
    if not text.strip():
        raise SteerError("the text to search is empty")
    labels = labels or {}
    densities = densities or {}
    enc = next(encode_texts(model, sae, [text], ctx_len=MAX_TOKENS))
    if not bool(enc.keep.any()):
        raise SteerError("the text is too short: no token after the first one to encode")
    strings = model.tokenizer.batch_decode([[int(t)] for t in enc.token_ids])

    def hit(fid: int, act: float, token: str | None = None) -> Hit:
        lab = labels.get(fid)
        return Hit(fid, round(act, 3), lab.name if lab else None, densities.get(fid), token)

    acts = enc.acts
    if max_density is not None:
        dense = [f for f, d in densities.items() if d > max_density]
        acts = acts.clone()
        acts[:, dense] = 0.0
    tokens = []
    k = min(per_token, acts.shape[1])
    vals, ids = acts.topk(k, dim=1)
    for pos, string in enumerate(strings):
        hits = [
            hit(f, v) for v, f in zip(vals[pos].tolist(), ids[pos].tolist(), strict=True) if v > 0
        ]
        tokens.append(TokenHits(pos, string, bool(enc.keep[pos]), hits))
    best, where = acts.max(dim=0)
    n = min(top, int((best > 0).sum()))
    weights = _weights(rank, densities, len(best))
    order = torch.argsort(best * weights, descending=True)[:n].tolist()
    overall = [hit(f, float(best[f]), strings[int(where[f])]) for f in order]
    return SearchResult(text=text, tokens=tokens, overall=overall)
