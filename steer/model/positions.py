"""Which positions of a token window an SAE should see.

Special tokens (BOS, chat markers, ``<|endoftext|>``, padding), position 0 of every window
(the attention sink, norm ~25,000 on SmolLM2 against a typical ~140) and outliers far above
the running median norm are left out of training, evaluation and indexing, and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


OUTLIER_RULE = (
    "drop special tokens, position 0 of each window, and norm > {factor} x running median"
)


def special_token_ids(tokenizer: Any) -> list[int]:
    """Every special token id: BOS/EOS/pad plus added tokens flagged special (chat markers)."""
    ids = set(tokenizer.all_special_ids)
    for idx, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return sorted(ids)


@dataclass
class CollectStats:
    """What collection saw and what it dropped (reported in SAE metadata and eval output)."""

    tokens: int = 0
    kept: int = 0
    special: int = 0
    first_position: int = 0
    outliers: int = 0
    max_outlier_norm: float = 0.0
    median_norm: float = 0.0


@dataclass
class OutlierFilter:
    """Drops positions whose norm exceeds ``factor`` x the running median norm.

    The reference is the median of per-batch medians, so one odd batch cannot move it much.
    """

    factor: float = 10.0
    _medians: list[float] = field(default_factory=list)

    def state_dict(self) -> dict[str, list[float]]:
        """The running state (to resume a stream exactly where it stopped)."""
        return {"medians": list(self._medians)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self._medians = [float(m) for m in state["medians"]]

    def keep(self, norms: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if candidates.any():
            self._medians.append(float(norms[candidates].median()))
        if not self._medians:
            return candidates
        ref = float(np.median(self._medians))
        return candidates & (norms <= self.factor * ref)

    @property
    def reference(self) -> float:
        return float(np.median(self._medians)) if self._medians else 0.0


def candidate_mask(ids: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Positions of ``ids`` ``[B, T]`` that may be kept whatever their norm: not a special
    token, not position 0 of a window."""
    candidates = ~torch.isin(ids, special)
    candidates[:, 0] = False
    return candidates


def filter_candidates(
    ids: torch.Tensor,
    norms: torch.Tensor,
    special: torch.Tensor,
    outliers: OutlierFilter,
    stats: CollectStats | None = None,
) -> torch.Tensor:
    """Which of the candidate positions of ``ids`` (:func:`candidate_mask`, in row-major order)
    to keep, given their norms ``[n_candidates]``; updates ``outliers`` and ``stats``.

    Split from :func:`keep_mask` so that a run whose forward passes were shared among
    processes can apply the (order-dependent) outlier rule afterwards, in window order, and
    keep exactly the positions one process would have kept.
    """
    keep = outliers.keep(norms, torch.ones_like(norms, dtype=torch.bool))
    if stats is not None:
        is_special = torch.isin(ids, special)
        dropped = ~keep
        stats.tokens += ids.numel()
        stats.special += int(is_special.sum())
        stats.first_position += int((~is_special[:, 0]).sum())
        stats.outliers += int(dropped.sum())
        stats.kept += int(keep.sum())
        if dropped.any():
            stats.max_outlier_norm = max(stats.max_outlier_norm, float(norms[dropped].max()))
        stats.median_norm = outliers.reference
    return keep


def keep_mask(
    ids: torch.Tensor,
    hidden: torch.Tensor,
    special: torch.Tensor,
    outliers: OutlierFilter,
    stats: CollectStats | None = None,
) -> torch.Tensor:
    """Which positions of ``ids`` ``[B, T]`` an SAE should see; updates ``stats``."""
    candidates = candidate_mask(ids, special)
    keep = torch.zeros_like(candidates)
    keep[candidates] = filter_candidates(
        ids, hidden.norm(dim=-1)[candidates], special, outliers, stats
    )
    return keep
