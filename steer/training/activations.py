"""Residual-stream activations for training: the kept positions of token windows, streamed,
and a shuffling buffer that mixes them with bounded memory."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import torch

from steer.errors import SteerError
from steer.model.positions import CollectStats, OutlierFilter, keep_mask, special_token_ids
from steer.model.trace import layer_output

log = logging.getLogger(__name__)


class ActivationBatch(NamedTuple):
    """Kept activations ``[N, d]`` with where each came from (window row, position)."""

    acts: torch.Tensor
    window: torch.Tensor
    position: torch.Tensor


def iter_activations(
    model: Any,
    layer: int,
    windows: torch.Tensor,
    *,
    batch_windows: int = 16,
    start: int = 0,
    outliers: OutlierFilter | None = None,
    stats: CollectStats | None = None,
) -> Iterator[ActivationBatch]:
    """Yield the kept activations of ``windows[start:]``, ``batch_windows`` windows per forward."""
    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers = outliers if outliers is not None else OutlierFilter()
    for b0 in range(start, len(windows), batch_windows):
        ids = windows[b0 : b0 + batch_windows].long()
        hidden = layer_output(model, layer, ids)
        keep = keep_mask(ids, hidden, special, outliers, stats)
        rows, pos = keep.nonzero(as_tuple=True)
        yield ActivationBatch(hidden[keep], rows + b0, pos)


# --------------------------------------------------------------------------- shuffling buffer


class ShuffleBuffer:
    """Mixes a stream of row batches: a fixed-size tensor buffer, filled, permuted, half of it
    emitted as batches and refilled from the stream. Memory stays at ``capacity`` rows."""

    def __init__(self, capacity: int, dim: int, *, seed: int, dtype: torch.dtype = torch.float32):
        if capacity < 2:
            raise SteerError("shuffle buffer capacity must be at least 2")
        self.buf = torch.empty(capacity, dim, dtype=dtype)
        self.gen = torch.Generator().manual_seed(seed)

    def batches(self, stream: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
        """Yield ``[batch_size, dim]`` float32 batches; a last partial batch is dropped."""
        cap, fill, half = len(self.buf), 0, len(self.buf) // 2
        pending = torch.empty(0, self.buf.shape[1], dtype=self.buf.dtype)
        for rows in stream:
            rows = rows.to(self.buf.dtype)
            while len(rows):
                take = min(cap - fill, len(rows))
                self.buf[fill : fill + take] = rows[:take]
                fill, rows = fill + take, rows[take:]
                if fill == cap:
                    perm = torch.randperm(cap, generator=self.gen)
                    self.buf[:] = self.buf[perm]
                    out = torch.cat([pending, self.buf[:half]])
                    pending = yield from _emit(out, batch_size)
                    # The emitted half is overwritten by the stream; the rest stays mixed in.
                    fill = cap - half
                    self.buf[:fill] = self.buf[half:].clone()
        perm = torch.randperm(fill, generator=self.gen)
        yield from _emit(torch.cat([pending, self.buf[:fill][perm]]), batch_size)


def _emit(rows: torch.Tensor, batch_size: int):
    n = len(rows) // batch_size * batch_size
    for i in range(0, n, batch_size):
        yield rows[i : i + batch_size].float()
    return rows[n:].clone()
