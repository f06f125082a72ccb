"""Which features fire on a text: per token, and over the whole text (max over its tokens)."""

from __future__ import annotations

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


def search_text(
    model: Any,
    sae: Any,
    text: str,
    *,
    top: int = 10,
    per_token: int = 5,
    labels: dict[int, Label] | None = None,
    densities: dict[int, float] | None = None,
) -> SearchResult:
    """Encode ``text`` (its first :data:`MAX_TOKENS` tokens) and rank its features.

    ``overall`` holds the ``top`` features by their max activation over the text;
    each token lists its ``per_token`` strongest features. ``labels`` and ``densities`` (from
    the feature index) annotate the hits when given.
    """
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

    tokens = []
    k = min(per_token, enc.acts.shape[1])
    vals, ids = enc.acts.topk(k, dim=1)
    for pos, string in enumerate(strings):
        hits = [
            hit(f, v) for v, f in zip(vals[pos].tolist(), ids[pos].tolist(), strict=True) if v > 0
        ]
        tokens.append(TokenHits(pos, string, bool(enc.keep[pos]), hits))
    best, where = enc.acts.max(dim=0)
    n = min(top, int((best > 0).sum()))
    order = torch.argsort(best, descending=True)[:n].tolist()
    overall = [hit(f, float(best[f]), strings[int(where[f])]) for f in order]
    return SearchResult(text=text, tokens=tokens, overall=overall)
