"""Score texts with a recipe's monitors, without generating.

Each recipe ``monitors:`` entry is a *group*: an SAE, the features it watches (ids or labels,
resolved by :func:`steer.steering.check.check_recipe`), a monitor plugin and its settings. A
text's score for a group is the maximum activation over the group's features and the text's
kept positions (or, for a monitor with its own ``score``, such as ``linear``, the maximum of
that score over the kept positions) (position 0, special tokens and norm outliers are skipped exactly as
:mod:`steer.features.encode` skips them); the text *fires* the group when the group's monitor
plugin reports an event on any kept position -- the same ``observe`` that runs during
generation (for the built-in ``threshold``: some activation above the threshold). Only the
watched features' encoder columns are asked for (:meth:`steer.sae.base.SAE.encode_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steer.errors import SteerError
from steer.steering.monitors import MonitorType


@dataclass(frozen=True)
class WatchedGroup:
    """One monitor of a recipe: ``features`` (ids) of the recipe SAE ``sae``, scored by the
    registered ``monitor`` with the recipe's entry ``spec`` (its settings as attributes)."""

    name: str
    sae: str
    features: tuple[int, ...]
    monitor: MonitorType
    spec: Any

    @property
    def settings(self) -> dict[str, Any]:
        return self.spec.settings


@dataclass
class TextScore:
    """One text's score per group (``scores``) and whether its monitor fired (``fired``)."""

    index: int
    n_tokens: int
    n_kept: int
    scores: dict[str, float] = field(default_factory=dict)
    fired: dict[str, bool] = field(default_factory=dict)


def watched_groups(recipe: Any, pm: Any) -> list[WatchedGroup]:
    """The recipe's monitors as groups of feature ids (labels resolved, ranges checked).

    A monitor without a ``name`` is called ``monitors[i]``. A recipe without monitors, or two
    monitors of the same name, is a one-line :class:`SteerError`.
    """
    from steer.plugins.registry import registry
    from steer.steering.check import check_recipe
    from steer.steering.monitors import MONITORS

    resolved = check_recipe(recipe, pm)
    if not resolved.monitors:
        raise SteerError("the recipe has no monitors to score with", where="monitors")
    groups: list[WatchedGroup] = []
    for name, spec in zip(resolved.group_names(), resolved.monitors, strict=True):
        groups.append(
            WatchedGroup(
                name=name,
                sae=spec.sae,
                features=tuple(int(f) for f in spec.features),
                monitor=registry(pm, MONITORS).get(spec.plugin, where="monitors"),
                spec=spec,
            )
        )
    return groups


def score_texts(
    model: Any,
    saes: dict[str, Any],
    groups: Sequence[WatchedGroup],
    texts: Sequence[str],
    *,
    ctx_len: int = 128,
    batch: int = 8,
    progress: bool = True,
) -> list[TextScore]:
    """Every text's score for every group, in input order.

    ``saes`` maps a recipe SAE id to the loaded SAE, or to ``(sae, hook)`` with the site it
    reads (as :func:`steer.steering.attach.attach_saes` gives). Texts go through the model once per SAE
    the groups watch, encoding only the union of that SAE's watched features. A text with no
    kept position scores 0 (SAE activations are never negative).
    """
    from tqdm.auto import tqdm

    from steer.features.encode import encode_texts

    out = [TextScore(index=i, n_tokens=0, n_kept=0) for i in range(len(texts))]
    by_sae: dict[str, list[WatchedGroup]] = {}
    for g in groups:
        by_sae.setdefault(g.sae, []).append(g)
    bar = tqdm(total=len(texts) * len(by_sae), desc="scoring", unit="text", disable=not progress)
    with bar:
        for sae_id, members in by_sae.items():
            sae, hook = saes[sae_id] if isinstance(saes[sae_id], tuple) else (saes[sae_id], None)
            if hook is None and sae.cfg.layer is None:
                raise SteerError(f"SAE {sae_id!r} does not say which layer it reads")
            union = sorted({f for g in members for f in g.features})
            column = {f: j for j, f in enumerate(union)}
            cols = {g.name: torch.tensor([column[f] for f in g.features]) for g in members}
            for enc in encode_texts(
                model, sae, texts, ctx_len=ctx_len, batch=batch, features=union, hook=hook
            ):
                row = out[enc.index]
                row.n_tokens = int(enc.token_ids.numel())
                row.n_kept = int(enc.keep.sum())
                kept = enc.acts[enc.keep]  # [n_kept, len(union)]
                for g in members:
                    acts = kept[:, cols[g.name]]
                    row.scores[g.name] = _score(g, acts) if row.n_kept else 0.0
                    row.fired[g.name] = bool(row.n_kept) and _fires(g, acts)
                bar.update(1)
    return out


def _score(group: WatchedGroup, acts: torch.Tensor) -> float:
    """A text's score for the group: the max over its kept positions of the monitor's own
    score, or of the largest watched activation when the monitor has none."""
    if group.monitor.score is None:
        return float(acts.max())
    return float(group.monitor.score(acts.unsqueeze(0), group.spec).max())


def _fires(group: WatchedGroup, acts: torch.Tensor) -> bool:
    """Whether the group's monitor reports an event on any of a text's kept positions
    ``acts`` ``[n_kept, n_features]`` (as one batch row)."""
    hits = group.monitor.observe(acts.unsqueeze(0), group.spec)
    return bool(hits.any())
