"""Activation caches collected with the forward passes shared out: among the processes of a
``torchrun`` job, and among several sites read in one pass.

The windows are cut into blocks of ``batch_windows``; block ``b`` goes to rank ``b % world``.
Each rank runs its blocks (one forward pass per block, every site read in it) and writes, per
site, the block's *candidate* rows (every position that is not a special token or position 0,
float16) and their norms into its own shard. The outlier rule depends on the order the blocks
come in (a running median), so it is applied afterwards: rank 0 walks the blocks in window
order, filters each with :func:`steer.model.positions.filter_candidates` and writes the kept
rows into the cache -- the same rows, in the same order, with the same ``meta.json``, as one
process collecting one site would have written (:func:`steer.training.cache.
build_activation_cache`). Values agree to float16 rounding of forward passes that may differ
in the last bit when the thread count differs.

Shards are resumable (each records how many of its blocks are done) and are removed once the
cache is whole. A shard of another world size or other windows is started again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from steer.distributed import World, barrier
from steer.errors import SteerError
from steer.io import atomic_write_text
from steer.model.layouts import site_width
from steer.model.positions import (
    CollectStats,
    OutlierFilter,
    candidate_mask,
    filter_candidates,
    special_token_ids,
)
from steer.model.sites import Hook
from steer.model.trace import sites_output
from steer.training.cache import (
    ActivationCache,
    cache_complete,
    cache_fingerprint,
    write_cache_meta,
)

Progress = Callable[[int, int], None]
_FLUSH_BLOCKS = 8


def build_activation_caches(
    model: Any,
    hooks: Sequence[Hook],
    windows: torch.Tensor,
    paths: Sequence[str | Path],
    *,
    world: World,
    outlier_factor: float = 10.0,
    batch_windows: int = 16,
    progress: Progress | None = None,
) -> list[ActivationCache]:
    """The caches of ``hooks`` (one folder each, in ``paths``) for ``windows``, collected by
    every rank of ``world`` together; complete caches are reused. Every rank must call this
    with the same arguments; all return once the caches are whole."""
    paths = [Path(p) for p in paths]
    fps = [cache_fingerprint(model.name, h, windows, outlier_factor) for h in hooks]
    if not all(cache_complete(p, fp) for p, fp in zip(paths, fps, strict=True)):
        tag = f"rank{world.rank}of{world.size}"
        shards = [
            _Shard(p / "shards" / tag, fp, batch_windows) for p, fp in zip(paths, fps, strict=True)
        ]
        width = [site_width(model.hf.config, h) for h in hooks]
        # Which positions are candidates depends on the tokens alone: found once for every
        # site, for this rank's share and for the merge.
        special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
        counts = _candidate_counts(windows, special, batch_windows)
        blocks = _Blocks(windows, batch_windows, special, counts)
        _collect_share(model, hooks, blocks, shards, width, world, progress)
        barrier(world)
        if world.is_main:
            for hook, path, fp in zip(hooks, paths, fps, strict=True):
                if not cache_complete(path, fp):
                    _merge(model, hook, blocks, path, fp, world, outlier_factor)
                shutil.rmtree(path / "shards", ignore_errors=True)
    barrier(world)
    return [ActivationCache(p) for p in paths]


class _Shard:
    """One rank's candidate rows of one site: ``rows.npy`` (float16), ``norms.npy`` (float32)
    and ``meta.json`` (how many of the rank's blocks are done, for resuming)."""

    def __init__(self, folder: Path, fingerprint: str, batch_windows: int):
        self.folder = folder
        self.key = {"fingerprint": fingerprint, "batch_windows": batch_windows}

    def blocks_done(self) -> int:
        meta_file = self.folder / "meta.json"
        if not meta_file.is_file():
            return 0
        meta = json.loads(meta_file.read_text())
        return int(meta["blocks_done"]) if meta.get("key") == self.key else 0

    def open(self, n_rows: int, width: int, fresh: bool) -> tuple[np.memmap, np.memmap]:
        self.folder.mkdir(parents=True, exist_ok=True)
        mode = "w+" if fresh else "r+"
        rows = np.lib.format.open_memmap(
            self.folder / "rows.npy", mode=mode, dtype=np.float16, shape=(n_rows, width)
        )
        norms = np.lib.format.open_memmap(
            self.folder / "norms.npy", mode=mode, dtype=np.float32, shape=(n_rows,)
        )
        return rows, norms

    def mark(self, blocks_done: int, arrays: Sequence[np.memmap]) -> None:
        for array in arrays:
            array.flush()
        meta = {"key": self.key, "blocks_done": blocks_done}
        atomic_write_text(self.folder / "meta.json", json.dumps(meta))


def _blocks(n_windows: int, batch_windows: int, world: World) -> list[int]:
    """The first window of each block this rank runs."""
    starts = range(0, n_windows, batch_windows)
    return [b0 for i, b0 in enumerate(starts) if i % world.size == world.rank]


def _candidate_counts(windows: torch.Tensor, special: torch.Tensor, batch_windows: int) -> list:
    return [
        int(candidate_mask(windows[b0 : b0 + batch_windows].long(), special).sum())
        for b0 in range(0, len(windows), batch_windows)
    ]


class _Blocks(NamedTuple):
    """The windows, cut into blocks of ``batch_windows``, with the special token ids and each
    block's number of candidate positions."""

    windows: torch.Tensor
    batch_windows: int
    special: torch.Tensor
    counts: list[int]


def _collect_share(
    model: Any,
    hooks: Sequence[Hook],
    blocks: _Blocks,
    shards: Sequence[_Shard],
    width: Sequence[int],
    world: World,
    progress: Progress | None,
) -> None:
    """Run this rank's blocks, appending each site's candidate rows to its shard."""
    windows, batch_windows, special, counts = blocks
    mine = _blocks(len(windows), batch_windows, world)
    my_counts = [counts[b0 // batch_windows] for b0 in mine]
    done = min(s.blocks_done() for s in shards)
    arrays = [
        s.open(max(1, sum(my_counts)), w, done == 0) for s, w in zip(shards, width, strict=True)
    ]
    row = sum(my_counts[:done])
    for i in range(done, len(mine)):
        ids = windows[mine[i] : mine[i] + batch_windows].long()
        candidates = candidate_mask(ids, special)
        for (rows, norms), hidden in zip(arrays, sites_output(model, hooks, ids), strict=True):
            picked = hidden[candidates]
            rows[row : row + len(picked)] = picked.to(torch.float16).numpy()
            norms[row : row + len(picked)] = hidden.norm(dim=-1)[candidates].numpy()
        row += my_counts[i]
        if (i + 1) % _FLUSH_BLOCKS == 0 or i + 1 == len(mine):
            for shard, pair in zip(shards, arrays, strict=True):
                shard.mark(i + 1, pair)
            if progress is not None:
                progress(min(len(windows), (i + 1) * batch_windows * world.size), len(windows))


def _merge(
    model: Any, hook: Hook, blocks: _Blocks, path: Path, fp: str, world: World, factor: float
) -> None:
    """Rank 0: the shards of one site, filtered in window order, into its cache."""
    windows, batch_windows, special, counts = blocks
    width = site_width(model.hf.config, hook)
    sources, offsets = [], [0] * world.size
    for rank in range(world.size):
        folder = path / "shards" / f"rank{rank}of{world.size}"
        n = max(1, sum(counts[rank :: world.size]))
        sources.append(
            (
                np.load(folder / "rows.npy", mmap_mode="r"),
                np.load(folder / "norms.npy", mmap_mode="r"),
            )
        )
        if sources[-1][1].shape != (n,):  # another run's shard: never merge it in
            raise SteerError(f"shard of rank {rank} does not fit these windows", where=str(folder))
    acts = np.lib.format.open_memmap(
        path / "acts.npy", mode="w+", dtype=np.float16, shape=(windows.numel(), width)
    )
    outliers, stats, row = OutlierFilter(factor), CollectStats(), 0
    for block, b0 in enumerate(range(0, len(windows), batch_windows)):
        rank, n = block % world.size, counts[block]
        rows, norms = sources[rank]
        lo = offsets[rank]
        offsets[rank] += n
        ids = windows[b0 : b0 + batch_windows].long()
        keep = filter_candidates(
            ids, torch.from_numpy(np.array(norms[lo : lo + n])), special, outliers, stats
        ).numpy()
        kept = np.asarray(rows[lo : lo + n])[keep]
        acts[row : row + len(kept)] = kept
        row += len(kept)
    acts.flush()
    meta = {"fingerprint": fp, "windows_done": len(windows), "n_rows": row, "complete": True}
    write_cache_meta(path / "meta.json", meta, model.name, hook, stats, outliers)
