"""Side effects of an edit: next-token loss on unrelated text, clean and with nodes ablated.

Uses the SAE evaluation's own pieces (:mod:`steer.training.evaluate`, :mod:`steer.model.trace`, :mod:`steer.model.positions`): the
text is packed into 128-token windows, and only kept positions are edited (never position 0,
special tokens or norm outliers), as in ``steer sae eval``. The ablation is the recipe's zero
or mean ablation, applied at every kept position of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steer.corpus.documents import read_documents
from steer.corpus.shipped import resolve_text_path
from steer.corpus.windows import pack_windows
from steer.errors import SteerError
from steer.model.positions import OutlierFilter, keep_mask, special_token_ids
from steer.pinpoint.nodes import Basis

CTX_LEN = 128


# Windows per forward: the logits of 4 x 128 tokens over a 49k vocabulary are ~100 MB.
_WINDOWS_PER_FORWARD = 4


@dataclass
class TextRun:
    """Clean residual stream of unrelated text at one layer (in chunks of windows), which
    positions are edited, and the clean loss."""

    layer: int
    ids: list[torch.Tensor]
    hidden: list[torch.Tensor]
    mask: list[torch.Tensor]
    ce_clean: float
    n_tokens: int


def load_windows(model: Any, path: str | Path, n_tokens: int) -> torch.Tensor:
    """``n_tokens // 128`` windows spread evenly over the text file at ``path`` (or the shipped
    text ``builtin:NAME``, for recipes built in code rather than read from a file)."""
    path = resolve_text_path(path)
    docs = read_documents(path, model.tokenizer)
    windows = pack_windows(model.tokenizer, docs, CTX_LEN)
    if len(windows) == 0:
        raise SteerError(f"side-effect text has fewer than {CTX_LEN} tokens", where=str(path))
    n = min(len(windows), max(1, n_tokens // CTX_LEN))
    return windows[torch.linspace(0, len(windows) - 1, n).round().long()].long()


def _loss_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    from steer.model.loss import mean_nll

    pos = mask[:, :-1]  # losses of predictions made at kept positions
    targets = ids[:, 1:][pos]
    return mean_nll(torch.log_softmax(logits[:, :-1][pos], -1), targets), len(targets)


def clean_text_run(model: Any, layer: int, windows: torch.Tensor) -> TextRun:
    """Clean pass over ``windows``: hidden states, kept positions and the clean loss."""
    from steer.model.trace import clean_run

    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers = OutlierFilter()
    run = TextRun(layer, [], [], [], 0.0, 0)
    total = 0.0
    for w0 in range(0, len(windows), _WINDOWS_PER_FORWARD):
        ids = windows[w0 : w0 + _WINDOWS_PER_FORWARD]
        hidden, logits = clean_run(model, layer, ids)
        mask = keep_mask(ids, hidden, special, outliers)
        nll, n = _loss_sum(logits, ids, mask)
        total += nll
        run.n_tokens += n
        run.ids.append(ids)
        run.hidden.append(hidden)
        run.mask.append(mask)
    run.ce_clean = total / run.n_tokens
    return run


def ablated_loss(
    model: Any,
    text: TextRun,
    basis: Basis,
    selected: torch.Tensor,
    target_mean: torch.Tensor | None,
) -> float:
    """Next-token loss on ``text`` with nodes ``selected`` set to 0 (or to ``target_mean``)."""
    from steer.model.trace import patched_logits

    sel = torch.as_tensor(selected, dtype=torch.long)
    total = 0.0
    for ids, hidden, mask in zip(text.ids, text.hidden, text.mask, strict=True):
        acts = basis.encode(hidden)[..., sel]
        target = torch.zeros_like(acts) if target_mean is None else target_mean[sel].expand_as(acts)
        new = hidden + ((target - acts) * mask[..., None]) @ basis.directions[sel]
        total += _loss_sum(patched_logits(model, text.layer, ids, new), ids, mask)[0]
    return total / text.n_tokens
