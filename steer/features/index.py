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
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer.corpus.documents import source_files
from steer.corpus.windows import build_windows
from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.features.index_db import (
    IDENTITY_KEYS,
    compact,
    connect,
    differences,
    flush,
    load_resume,
    read_meta,
    resume_blob,
    write_meta,
)
from steer.features.logits import N_LOGITS, output_logits, token_strings
from steer.features.running import HIST_EDGES, SAMPLES, RunningIndex
from steer.features.store import INDEX_FILENAME, STORE_FORMAT
from steer.io import file_sha256
from steer.model.positions import OUTLIER_RULE

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


def _identity(
    model: Any,
    sae: Any,
    sae_folder: Path,
    data: Sequence[str | Path],
    *,
    max_tokens: int | None,
    ctx_len: int,
    top_k: int,
    context_tokens: int,
    samples: int,
) -> dict[str, Any]:
    from steer.sae.formats import WEIGHTS_FILENAME

    files = source_files(data)
    weights = Path(sae_folder) / WEIGHTS_FILENAME
    return {
        "format": STORE_FORMAT,
        "sae": Path(sae_folder).resolve().name,
        "sae_sha256": file_sha256(weights) if weights.is_file() else None,
        "model": model.name,
        "layer": int(sae.cfg.layer),
        "d_sae": int(sae.cfg.d_sae),
        "data": [{"path": str(p.resolve()), "sha256": file_sha256(p)} for p in files],
        "data_sha256": [file_sha256(p) for p in files],
        "max_tokens": max_tokens,
        "ctx_len": ctx_len,
        "top_k": top_k,
        "context_tokens": context_tokens,
        "quantile_samples": samples,
        "hist_edges": HIST_EDGES,
        "outlier_rule": OUTLIER_RULE.format(factor=OUTLIER_FACTOR),
    }


class IndexBuild:
    """One run of :func:`build_index`, in steps: set up (the constructor), :meth:`load_state`,
    :meth:`run`, :meth:`finish`; :meth:`close` releases the work file whatever happened.

    The constructor checks the arguments and any existing index or work file: one of other
    settings is refused (unless ``rebuild``), a complete one sets :attr:`up_to_date` to the
    result to return (and nothing else is prepared), and otherwise the windows, the output
    tokens, the running state and the encoder are made ready.
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
    ):
        self.t0 = time.perf_counter()
        if top_k < 1 or context_tokens < 1 or samples < 0:
            raise SteerError("--top-k and the context size must be at least 1, samples >= 0")
        sae_folder = Path(sae_folder)
        self.db = Path(db) if db is not None else default_db_path(sae_folder)
        self.work = partial_path(self.db)
        self.batch_windows, self.flush_every = batch_windows, flush_every
        self.progress, self.stop_after = progress, stop_after
        self.want = _identity(
            model,
            sae,
            sae_folder,
            data,
            max_tokens=max_tokens,
            ctx_len=ctx_len,
            top_k=top_k,
            context_tokens=context_tokens,
            samples=samples,
        )
        self.con: sqlite3.Connection | None = None
        self.done = 0  # windows folded into the state, in this run and the ones it continues
        self.resumed = False
        self.meta: dict[str, Any] = {}
        self.prev_seconds = 0.0
        self.up_to_date = self._check_existing(rebuild)
        if self.up_to_date is None:
            if rebuild:
                self.work.unlink(missing_ok=True)
            self._prepare(model, sae, data, max_tokens, ctx_len)

    def _check_existing(self, rebuild: bool) -> BuildResult | None:
        """Refuse an index or work file of other settings; the result when ``db`` is complete."""
        db, work = self.db, self.work
        for path in (db, work):
            if not path.exists() or rebuild:
                continue
            have = read_meta(path)
            if path == work and not have:  # killed before it recorded anything: start afresh
                work.unlink()
                continue
            if have is None:
                raise SteerError(
                    "exists but is not a feature index; pass --rebuild to replace it",
                    where=str(path),
                )
            diff = differences(have, self.want)
            if diff:
                raise SteerError(
                    f"is an index of different {', '.join(diff)}; pass --rebuild to replace it "
                    "(or --db to build elsewhere)",
                    where=str(path),
                )
            if path == db and have.get("status") == "complete" and not work.exists():
                return BuildResult(
                    db, "up-to-date", have["windows_done"], have["tokens_indexed"], 0.0, have
                )
        return None

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
        vocab_size = int(model.hf.get_output_embeddings().weight.shape[0])
        self.vocab = token_strings(model.tokenizer, max(vocab_size, len(model.tokenizer)))
        self.logits = output_logits(sae, model, self.vocab)
        want = self.want
        self.state = RunningIndex(
            int(sae.cfg.d_sae),
            top_k=want["top_k"],
            context_tokens=min(want["context_tokens"], ctx_len),
            n_bins=len(HIST_EDGES) - 1,
            samples=want["quantile_samples"],
        )
        self.encoder = BatchEncoder(model, sae, outlier_factor=OUTLIER_FACTOR)

    def load_state(self) -> None:
        """Open the work file and continue from the state its last flush saved, if any."""
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.work)
        saved = load_resume(self.con, self.state.state_dict())
        if saved is not None:
            self.state.load_state_dict(saved["index"])
            self.encoder.outliers.load_state_dict({"medians": saved["medians"]})
            for key, value in saved["stats"].items():
                setattr(self.encoder.stats, key, value)
            self.done = int(saved["windows_done"])
        self.resumed = self.done > 0
        self.meta = {**self.want, "windows_total": len(self.windows), "status": "partial"}
        if self.resumed:
            self.prev_seconds = (read_meta(self.work) or {}).get("build_seconds", 0.0)
        else:  # the identity goes in first, so a kill before the first flush resumes
            with self.con:
                write_meta(self.con, {**self.meta, "windows_done": 0})

    def run(self) -> None:
        """Encode the remaining windows batch by batch, flushing every ``flush_every``."""
        # Batches always start at multiples of batch_windows, as in an unbroken run, so the
        # outlier filter sees the same batches and a resumed index equals an unbroken one.
        batch = self.batch_windows
        end = len(self.windows)
        if self.stop_after is not None:
            end = min(end, -(-self.stop_after // batch) * batch)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(self.windows),
            initial=self.done,
            desc="index",
            unit="win",
            disable=not self.progress,
        )
        since_flush = 0
        while self.done < end:
            ids = self.windows[self.done : min(self.done + batch, end)].long()
            acts, _keep = self.encoder(ids)
            self.state.update(ids, acts)
            self.done += len(ids)
            since_flush += len(ids)
            bar.update(len(ids))
            if since_flush >= self.flush_every and self.done < end:
                self._flush(final=False)
                since_flush = 0
        bar.close()

    def _flush(self, final: bool) -> None:
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

    def finish(self) -> BuildResult:
        """Flush the last state; when every window is in, VACUUM and rename over ``db``."""
        complete = self.done >= len(self.windows)
        self._flush(final=complete)
        if complete:
            compact(self.con)
        self.close()
        if complete:
            # Not steer.io.atomic_path: its temporary file is private to one process and is
            # deleted on failure, and a build's work file must outlive a kill to be resumed.
            with open(self.work, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.work, self.db)
        status = ("resumed" if self.resumed else "built") if complete else "partial"
        return BuildResult(
            self.db if complete else self.work,
            status,
            self.done,
            self.encoder.stats.kept,
            time.perf_counter() - self.t0,
            self.meta,
        )

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
) -> BuildResult:
    """Index ``sae`` (at its layer of ``model``) over the texts in ``data``.

    Writes ``db`` (default: ``features.sqlite`` in ``sae_folder``). Running it again with the
    same SAE weights, model, data and settings continues a partial build, or does nothing when
    the index is complete; anything else is refused unless ``rebuild``. Each feature keeps
    ``samples`` quantile samples (0: none). ``stop_after`` ends the run at the first batch
    boundary after that many windows in total, leaving a partial index (for tests and for
    splitting a long build).
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
    )
    if build.up_to_date is not None:
        return build.up_to_date
    try:
        build.load_state()
        build.run()
        return build.finish()
    finally:
        build.close()
