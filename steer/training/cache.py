"""A resumable on-disk cache of activations, read back through a shuffling buffer.

Collection is the slow stage (~630 tok/s for SmolLM2 layer 12 on one CPU thread), while
training wants several passes over the data. So activations are collected once into one float16
``.npy`` file (memory-mapped: never all in memory) and read back in shuffled passes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steer.io import atomic_write_text
from steer.model.positions import OUTLIER_RULE, CollectStats, OutlierFilter
from steer.training.activations import ShuffleBuffer, iter_activations


class ActivationCache:
    """Activations stored as one float16 ``.npy`` (memory-mapped) plus ``meta.json``.

    Building is resumable: ``meta.json`` records how many windows are done, so an interrupted
    collection continues where it stopped. Reading goes in contiguous chunks (visited in a
    seeded random order) through a :class:`ShuffleBuffer`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.acts = np.load(self.path / "acts.npy", mmap_mode="r")

    @property
    def n_rows(self) -> int:
        return int(self.meta["n_rows"])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def rows(self, n: int | None = None, *, seed: int = 0) -> torch.Tensor:
        """``n`` rows picked at random (float32), e.g. to initialise b_dec and the input scale."""
        n = self.n_rows if n is None else min(n, self.n_rows)
        pick = np.sort(np.random.default_rng(seed).choice(self.n_rows, size=n, replace=False))
        return torch.from_numpy(np.asarray(self.acts[pick], dtype=np.float32))

    def epoch_batches(
        self, epoch: int, batch_size: int, *, seed: int, buffer_rows: int = 1 << 17
    ) -> Iterator[torch.Tensor]:
        """One shuffled pass over the cache; the same ``(seed, epoch)`` gives the same batches."""
        chunk = 8192
        starts = list(range(0, self.n_rows, chunk))
        order = np.random.default_rng([seed, epoch]).permutation(len(starts))
        end = self.n_rows
        stream = (
            torch.from_numpy(np.array(self.acts[starts[i] : min(starts[i] + chunk, end)]))
            for i in order
        )
        capacity = min(buffer_rows, max(2, end))
        buffer = ShuffleBuffer(
            capacity, self.acts.shape[1], seed=seed * 100_003 + epoch, dtype=torch.float16
        )
        yield from buffer.batches(stream, batch_size)

    def batches_per_epoch(self, batch_size: int) -> int:
        return self.n_rows // batch_size


def cache_fingerprint(model_name: str, layer: Any, windows: torch.Tensor, factor: float) -> str:
    """Identifies what a cache holds: a cache built from other windows is rebuilt, not reused."""
    digest = hashlib.sha256(windows.numpy().tobytes())
    digest.update(json.dumps([model_name, _site_key(layer), list(windows.shape), factor]).encode())
    return digest.hexdigest()[:24]


def cache_complete(path: str | Path, fingerprint: str) -> bool:
    """Whether the cache at ``path`` holds every window of ``fingerprint`` (so it is reused)."""
    meta_file = Path(path) / "meta.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    return meta.get("fingerprint") == fingerprint and bool(meta.get("complete"))


def _site_key(layer: Any) -> Any:
    """A block number for the residual stream after it (what caches said before there were
    other sites, so those caches are still found), else the site's TransformerLens name."""
    if isinstance(layer, int):
        return layer
    return layer.layer if layer.kind == "resid_post" else layer.name


def build_activation_cache(
    model: Any,
    layer: Any,
    windows: torch.Tensor,
    path: str | Path,
    *,
    outlier_factor: float = 10.0,
    batch_windows: int = 16,
    flush_every: int = 16,
    progress: Any = None,
) -> ActivationCache:
    """Collect the activations of ``windows`` into the cache at ``path`` (resuming a partial one).

    ``layer``: a block (the residual stream after it) or a :class:`~steer.model.sites.Hook`.

    ``progress`` is called as ``progress(windows_done, n_windows, stats)`` after each flush.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fp = cache_fingerprint(model.name, layer, windows, outlier_factor)
    meta_file, npy = path / "meta.json", path / "acts.npy"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if meta.get("fingerprint") != fp or not npy.is_file():
        meta = {"fingerprint": fp, "windows_done": 0, "n_rows": 0, "complete": False, "medians": []}
        mm = np.lib.format.open_memmap(
            npy, mode="w+", dtype=np.float16, shape=(windows.numel(), _width(model, layer))
        )
    else:
        mm = np.load(npy, mmap_mode="r+")
    if meta["complete"]:
        return ActivationCache(path)
    stats = CollectStats(**meta.get("stats", {}))
    outliers = OutlierFilter(outlier_factor)
    outliers.load_state_dict(meta)
    row, done = meta["n_rows"], meta["windows_done"]

    def flush(done_now: int, complete: bool = False) -> None:
        mm.flush()
        meta.update(windows_done=done_now, n_rows=row, complete=complete)
        write_cache_meta(meta_file, meta, model.name, layer, stats, outliers)
        if progress is not None:
            progress(done_now, len(windows), stats)

    batches = iter_activations(
        model,
        layer,
        windows,
        batch_windows=batch_windows,
        start=done,
        outliers=outliers,
        stats=stats,
    )
    for i, batch in enumerate(batches, 1):
        mm[row : row + len(batch.acts)] = batch.acts.to(torch.float16).numpy()
        row += len(batch.acts)
        done = min(done + batch_windows, len(windows))
        if i % flush_every == 0:
            flush(done)
    flush(len(windows), complete=True)
    return ActivationCache(path)


def write_cache_meta(
    meta_file: Path,
    meta: dict[str, Any],
    model_name: str,
    layer: Any,
    stats: CollectStats,
    outliers: OutlierFilter,
) -> None:
    """Write a cache's ``meta.json`` atomically: ``meta`` (fingerprint, windows done, rows,
    completeness) plus what collection saw and the outlier filter's running state."""
    meta.update(stats=asdict(stats), **outliers.state_dict(), layer=_site_key(layer))
    meta.update(model=model_name, outlier_rule=OUTLIER_RULE.format(factor=outliers.factor))
    atomic_write_text(meta_file, json.dumps(meta))


def _width(model: Any, layer: Any) -> int:
    if isinstance(layer, int):
        return int(model.d_model)
    from steer.model.layouts import site_width

    return site_width(model.hf.config, layer)
