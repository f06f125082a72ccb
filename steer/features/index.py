"""Build the feature index of an SAE: what every feature fires on, over a corpus.

For every feature: its top-k activating contexts (a short window of tokens around the token
where it fired most, with the activation of every token in it), quantile samples (contexts
around a uniform random sample of the tokens it fired on), how often it fires (density), its
mean activation over the tokens it fires on, its max, a histogram of its activations over
fixed log-spaced bins, and the output tokens its decoder direction promotes and suppresses.

The corpus is cut into token windows exactly as training and evaluation cut it
(:func:`steer.corpus.windows.build_windows`, seeded), encoded batch by batch, and folded into
running per-feature statistics (:class:`steer.features.running.RunningIndex`).

The index is SQLite (schema in :mod:`steer.features.store`, written by
:mod:`steer.features.index_db`). It is built in ``<db>.partial`` beside the final file and
flushed there in one transaction every ``flush_every`` windows, with the exact running state,
so a killed build continues where it stopped when the same command runs again; a finished
build is VACUUMed and renamed over ``<db>``. This module is the orchestration:
:class:`IndexBuild` and its steps, run by :func:`build_index`.

Under ``torchrun`` every rank runs the same steps: the batches are dealt out among the ranks
and the ranks' states merged exactly (:mod:`steer.features.sharding`); rank 0 alone reads and
writes the index files and shows progress, and gives the index one process would have built.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer.corpus.windows import build_windows
from steer.distributed import World, broadcast_object
from steer.distributed import world as current_world
from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.features.index_db import (
    IDENTITY_KEYS,
    compact,
    connect,
    existing_index,
    flush,
    index_identity,
    load_resume,
    read_meta,
    resume_blob,
    write_meta,
)
from steer.features.logits import N_LOGITS, output_logits, token_strings
from steer.features.running import HIST_EDGES, SAMPLES, RunningIndex
from steer.features.sharding import collect, exchange, fold_round, merge_parts, rounds
from steer.features.store import INDEX_FILENAME

# The constants of an index live beside the code that uses them; they are importable from
# here too, where the index is built.
__all__ = [
    "CONTEXT_TOKENS",
    "HIST_EDGES",
    "IDENTITY_KEYS",
    "N_LOGITS",
    "OUTLIER_FACTOR",
    "SAMPLES",
    "BuildResult",
    "IndexBuild",
    "build_index",
    "default_db_path",
    "partial_path",
]

# A context shows three times more tokens before the max token than after it: the model is
# causal, so what made the feature fire is on the left.
CONTEXT_TOKENS = 24
OUTLIER_FACTOR = 10.0


@dataclass
class BuildResult:
    """What :func:`build_index` did."""

    path: Path
    status: str  # "built", "resumed" or "up-to-date"
    windows: int
    tokens: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def default_db_path(sae_folder: Path) -> Path:
    """Where the index of the SAE in ``sae_folder`` lives unless ``--db`` says otherwise."""
    return Path(sae_folder) / INDEX_FILENAME


def partial_path(db: Path) -> Path:
    """The file a build of ``db`` works in until it is complete."""
    return db.with_name(db.name + ".partial")


class IndexBuild:
    """One run of :func:`build_index`, in steps: set up (the constructor), :meth:`load_state`,
    :meth:`run`, :meth:`finish`; :meth:`close` releases the work file whatever happened.

    The constructor checks the arguments and any existing index or work file: one of other
    settings is refused (unless ``rebuild``), a complete one sets :attr:`up_to_date` to the
    result to return (and nothing else is prepared), and otherwise the windows, the output
    tokens, the running state and the encoder are made ready. Every rank of ``world`` runs
    every step; only rank 0 touches the files.
    """

    def __init__(
        self,
        model: Any,
        sae: Any,
        sae_folder: str | Path,
        data: Sequence[str | Path],
        *,
        db: str | Path | None,
        max_tokens: int | None,
        top_k: int,
        ctx_len: int,
        context_tokens: int,
        samples: int,
        batch_windows: int,
        flush_every: int,
        rebuild: bool,
        progress: bool,
        stop_after: int | None,
        world: World | None = None,
        desc: str = "index",
    ):
        self.t0 = time.perf_counter()
        if top_k < 1 or context_tokens < 1 or samples < 0:
            raise SteerError("--top-k and the context size must be at least 1, samples >= 0")
        sae_folder = Path(sae_folder)
        self.world = world = world if world is not None else current_world()
        self.db = Path(db) if db is not None else default_db_path(sae_folder)
        self.work = partial_path(self.db)
        self.batch_windows, self.flush_every = batch_windows, flush_every
        self.progress, self.stop_after = progress and world.is_main, stop_after
        self.desc = desc  # the progress bar's name
        self.settings = {"top_k": top_k, "context_tokens": context_tokens, "samples": samples}
        self.want: dict[str, Any] = {}
        self.con: sqlite3.Connection | None = None
        self.done = 0  # windows folded into the state, in this run and the ones it continues
        self.resumed = False
        self.meta: dict[str, Any] = {}
        self.prev_seconds = 0.0

        def check() -> BuildResult | None:  # rank 0 alone reads and removes the shared files
            if not world.is_main:
                return None
            self.want = index_identity(
                model,
                sae,
                sae_folder,
                data,
                max_tokens=max_tokens,
                ctx_len=ctx_len,
                outlier_factor=OUTLIER_FACTOR,
                **self.settings,
            )
            have = existing_index(self.db, self.work, self.want, rebuild=rebuild)
            if have is not None:
                windows, tokens = have["windows_done"], have["tokens_indexed"]
                return BuildResult(self.db, "up-to-date", windows, tokens, 0.0, have)
            if rebuild:
                self.work.unlink(missing_ok=True)
            return None

        self.up_to_date: BuildResult | None = exchange(world, check)[0]
        if self.up_to_date is None:
            exchange(world, lambda: self._prepare(model, sae, data, max_tokens, ctx_len))

    def _prepare(
        self,
        model: Any,
        sae: Any,
        data: Sequence[str | Path],
        max_tokens: int | None,
        ctx_len: int,
    ) -> None:
        self.windows = build_windows(
            model.tokenizer, [str(p) for p in data], ctx_len=ctx_len, n_tokens=max_tokens
        )
        if len(self.windows) == 0:
            raise SteerError(f"the data holds no window of {ctx_len} tokens")
        if self.world.is_main:  # the output tokens go into the rows rank 0 writes
            vocab_size = int(model.hf.get_output_embeddings().weight.shape[0])
            self.vocab = token_strings(model.tokenizer, max(vocab_size, len(model.tokenizer)))
            self.logits = output_logits(sae, model, self.vocab)
        self.state = RunningIndex(
            int(sae.cfg.d_sae),
            top_k=self.settings["top_k"],
            context_tokens=min(self.settings["context_tokens"], ctx_len),
            n_bins=len(HIST_EDGES) - 1,
            samples=self.settings["samples"],
        )
        self.encoder = BatchEncoder(model, sae, outlier_factor=OUTLIER_FACTOR)

    def load_state(self) -> None:
        """Open the work file and continue from the state its last flush saved, if any (rank 0
        holds that state; every rank gets the windows done and the outlier filter's medians)."""

        def load() -> tuple[int, list[float]]:
            if self.world.is_main:
                self._load_work()
            return self.done, self.encoder.outliers.state_dict()["medians"]

        self.done, medians = exchange(self.world, load)[0]
        self.encoder.outliers.load_state_dict({"medians": medians})
        self.resumed = self.done > 0

    def _load_work(self) -> None:
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.work)
        saved = load_resume(self.con, self.state.state_dict())
        if saved is not None:
            self.state.load_state_dict(saved["index"])
            self.encoder.outliers.load_state_dict({"medians": saved["medians"]})
            for key, value in saved["stats"].items():
                setattr(self.encoder.stats, key, value)
            self.done = int(saved["windows_done"])
        self.meta = {**self.want, "windows_total": len(self.windows), "status": "partial"}
        if self.done > 0:
            self.prev_seconds = (read_meta(self.work) or {}).get("build_seconds", 0.0)
        else:  # the identity goes in first, so a kill before the first flush resumes
            with self.con:
                write_meta(self.con, {**self.meta, "windows_done": 0})

    def run(self) -> None:
        """Encode the remaining windows batch by batch, flushing every ``flush_every``."""
        # Batches always start at multiples of batch_windows, as in an unbroken run, so the
        # outlier filter sees the same batches and a resumed index equals an unbroken one.
        batch, w = self.batch_windows, self.world
        end = len(self.windows)
        if self.stop_after is not None:
            end = min(end, -(-self.stop_after // batch) * batch)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(self.windows),
            initial=self.done,
            desc=self.desc,
            unit="win",
            disable=not self.progress,
        )
        since_flush = 0
        for starts in rounds(self.done, end, batch, w.size):
            mine = starts[w.rank] if w.rank < len(starts) else None
            ids = None if mine is None else self.windows[mine : min(mine + batch, end)].long()
            fold_round(w, self.encoder, self.state, ids, mine)
            n = min(starts[-1] + batch, end) - starts[0]
            self.done += n
            since_flush += n
            bar.update(n)
            if since_flush >= self.flush_every and self.done < end:
                self._flush(final=False)
                since_flush = 0
        bar.close()

    def _flush(self, final: bool) -> None:
        """Every rank: the states go to rank 0, which merges them and writes the rows (and,
        when ``final``, finishes the file)."""
        self.state, self.encoder.stats, parts = collect(self.world, self.state, self.encoder.stats)
        exchange(self.world, lambda: self._write(parts, final) if parts is not None else None)

    def _write(self, parts: list[Any], final: bool) -> None:  # rank 0
        merge_parts(self.state, self.encoder.stats, parts)
        self.encoder.stats.median_norm = self.encoder.outliers.reference
        stats = dict(vars(self.encoder.stats))
        self.meta.update(
            windows_done=self.done,
            tokens_indexed=self.encoder.stats.kept,
            positions=stats,
            status="complete" if final else "partial",
            build_seconds=round(self.prev_seconds + time.perf_counter() - self.t0, 1),
        )
        blob = None
        if not final:
            extra = {"windows_done": self.done, **self.encoder.outliers.state_dict()}
            blob = resume_blob(self.state, {**extra, "stats": stats})
        tokens = self.encoder.stats.kept
        flush(
            self.con,
            self.state,
            self.meta,
            self.vocab,
            self.logits,
            tokens=tokens,
            resume_blob=blob,
        )
        if final:
            compact(self.con)
            self.close()
            # Not steer.io.atomic_path: its temporary file is private to one process and is
            # deleted on failure, and a build's work file must outlive a kill to be resumed.
            with open(self.work, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.work, self.db)

    def finish(self) -> BuildResult:
        """Flush the last state; when every window is in, VACUUM and rename over ``db``. Every
        rank returns rank 0's result."""
        complete = self.done >= len(self.windows)
        self._flush(final=complete)
        self.close()
        status = ("resumed" if self.resumed else "built") if complete else "partial"
        result = BuildResult(
            self.db if complete else self.work,
            status,
            self.done,
            self.encoder.stats.kept,
            time.perf_counter() - self.t0,
            self.meta,
        )
        return broadcast_object(self.world, result)

    def close(self) -> None:
        """Close the work file (the last flush stays in it)."""
        if self.con is not None:
            self.con.close()
            self.con = None


def build_index(
    model: Any,
    sae: Any,
    sae_folder: str | Path,
    data: Sequence[str | Path],
    *,
    db: str | Path | None = None,
    max_tokens: int | None = None,
    top_k: int = 20,
    ctx_len: int = 128,
    context_tokens: int = CONTEXT_TOKENS,
    samples: int = SAMPLES,
    batch_windows: int = 16,
    flush_every: int = 256,
    rebuild: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    world: World | None = None,
    desc: str = "index",
) -> BuildResult:
    """Index ``sae`` (at its layer of ``model``) over the texts in ``data``.

    Writes ``db`` (default: ``features.sqlite`` in ``sae_folder``). Running it again with the
    same SAE weights, model, data and settings continues a partial build, or does nothing when
    the index is complete; anything else is refused unless ``rebuild``. Each feature keeps
    ``samples`` quantile samples (0: none). ``stop_after`` ends the run at the first batch
    boundary after that many windows in total, leaving a partial index (for tests and for
    splitting a long build). ``desc`` names the progress bar.

    Under ``torchrun`` (``world``, default :func:`steer.distributed.world`) every process calls
    this with the same arguments; they share the batches and rank 0 writes the index, equal to
    the one a single process builds (and a partial build resumes with any number of processes).
    """
    build = IndexBuild(
        model,
        sae,
        sae_folder,
        data,
        db=db,
        max_tokens=max_tokens,
        top_k=top_k,
        ctx_len=ctx_len,
        context_tokens=context_tokens,
        samples=samples,
        batch_windows=batch_windows,
        flush_every=flush_every,
        rebuild=rebuild,
        progress=progress,
        stop_after=stop_after,
        world=world,
        desc=desc,
    )
    if build.up_to_date is not None:
        return build.up_to_date
    try:
        build.load_state()
        build.run()
        return build.finish()
    finally:
        build.close()
