"""A feature-index build shared out among the processes of a ``torchrun`` job.

The windows are cut into batches of ``batch_windows`` exactly as one process cuts them, and the
batches are dealt out in rounds: from where the build stands, batch ``b`` goes to rank
``b % world``, so the work is balanced and every rank runs the same number of rounds (in the
last one some ranks may have no batch). In a round each rank runs the forward pass of its
batch, then the ranks swap their batches' median norms: the outlier rule is a running median
over the batches in corpus order, so with the medians of the batches before its own each rank
keeps exactly the positions one process would keep, and encodes them, and every rank ends the
round with the same filter state.

Each rank folds its batches into its own :class:`~steer.features.running.RunningIndex`. At a
flush (and at the end) the states and position counts go to rank 0, which merges them
(:meth:`~steer.features.running.RunningIndex.merge`, exact and independent of order) and
writes the index; the other ranks start theirs afresh. The saved state is therefore one state
of a prefix of the corpus, whatever the number of processes, and a build resumes with any.

Every step that can fail on one rank runs through :func:`exchange`, so a failure anywhere
ends every rank, with the failing rank's message, and none waits forever in a collective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from steer.distributed import World, all_gather_objects
from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.features.running import RunningIndex
from steer.model.positions import CollectStats, OutlierFilter, keep_mask


def _one_line(exc: BaseException, rank: int) -> str:
    if isinstance(exc, SteerError):  # the user's error: the same line on every rank
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"rank {rank}: {type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def exchange(w: World, fn: Callable[[], Any]) -> list[Any]:
    """``fn()`` on this rank, then every rank's result, in rank order, on every rank.

    When ``fn`` raises on any rank every rank raises: that rank its own exception, the others a
    :class:`SteerError` with its message. The results travel between the ranks (pickled), so
    ``fn`` should return something small.
    """
    failure: Exception | None = None
    try:
        mine: tuple[str | None, Any] = (None, fn())
    except Exception as exc:
        failure = exc
        mine = (_one_line(exc, w.rank), None)
    results = all_gather_objects(w, mine)
    if failure is not None:
        raise failure
    for message, _ in results:
        if message is not None:
            raise SteerError(message)
    return [value for _, value in results]


def rounds(first: int, end: int, batch: int, size: int) -> Iterator[list[int]]:
    """The first windows of the batches from window ``first`` up to ``end``, ``size`` batches
    (one per rank, in rank order) per round."""
    starts = list(range(first, end, batch))
    for i in range(0, len(starts), size):
        yield starts[i : i + size]


def batch_medians(encoder: BatchEncoder, ids: torch.Tensor, hidden: torch.Tensor) -> list[float]:
    """What folding this batch adds to the outlier filter's medians (``[median]``, or ``[]``
    when it has no candidate position), computed by the filter's own code on a fresh one."""
    probe = OutlierFilter(encoder.outliers.factor)
    keep_mask(ids, hidden, encoder.special, probe)
    return probe.state_dict()["medians"]


def fold_round(
    w: World,
    encoder: BatchEncoder,
    state: RunningIndex,
    ids: torch.Tensor | None,
    start: int | None,
) -> None:
    """Encode this rank's batch of the round (``ids`` of windows ``start ...``; None: no batch
    this round) and fold it into ``state``, keeping exactly the positions one process running
    every batch in order would keep. Every rank calls this once per round."""
    hidden: torch.Tensor | None = None

    def forward() -> list[float]:
        nonlocal hidden
        if ids is None:
            return []
        hidden = encoder.hidden(ids)
        return batch_medians(encoder, ids, hidden)

    medians = exchange(w, forward)
    earlier = [m for rank in medians[: w.rank] for m in rank]
    later = [m for rank in medians[w.rank + 1 :] for m in rank]
    # The filter is only reloaded when other ranks had batches this round (never in one
    # process): its medians grow with the corpus, and copying them every round would not.
    before = encoder.outliers.state_dict()["medians"] if earlier or later else []

    def encode() -> None:
        if ids is None or hidden is None:
            return
        if earlier:
            encoder.outliers.load_state_dict({"medians": before + earlier})
        keep = encoder.keep(ids, hidden)  # appends this batch's own median
        state.update(ids, encoder.encode_kept(hidden, keep), start=start)

    exchange(w, encode)
    if earlier or later:  # every rank leaves the round with the medians of all its batches
        encoder.outliers.load_state_dict({"medians": before + [m for r in medians for m in r]})


def gather_to_main(w: World, obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * w.size if w.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def collect(
    w: World, state: RunningIndex, stats: CollectStats
) -> tuple[RunningIndex, CollectStats, list[Any] | None]:
    """Every rank: send this rank's state and position counts to rank 0. Returns the state
    and stats this rank continues with (fresh ones on the other ranks: theirs are now rank
    0's) and, on rank 0, the other ranks' parts, for :func:`merge_parts`."""
    parts = gather_to_main(w, (state.state_dict(), dataclasses.asdict(stats)))
    if w.is_main:
        return state, stats, (parts or [])[1:]
    return state.fresh(), CollectStats(), None


def merge_parts(state: RunningIndex, stats: CollectStats, parts: list[Any]) -> None:
    """Rank 0: fold the other ranks' parts (from :func:`collect`) into its state and stats."""
    for tensors, counts in parts:
        other = state.fresh()
        other.load_state_dict(tensors)
        state.merge(other)
        for name, value in counts.items():
            if name == "max_outlier_norm":
                stats.max_outlier_norm = max(stats.max_outlier_norm, value)
            elif name != "median_norm":  # not a count: the caller sets it from the filter
                setattr(stats, name, getattr(stats, name) + value)
