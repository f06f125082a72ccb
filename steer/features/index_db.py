"""The SQLite side of a feature-index build: the work file, its rows and its resume state.

The tables are those of :mod:`steer.features.store` (``samples`` included) plus ``resume``, which holds the exact
running state while a build is partial and is dropped when it completes: one row (key
``state``) with the running index's tensors as safetensors bytes (``value``) and the rest
(outlier medians, position stats, windows done) as JSON (``state_json``): reading it runs no
code. Every flush rewrites the rows and the resume state in one transaction, so a kill
leaves the previous flush intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch as st
import torch

from steer.corpus.documents import source_files
from steer.errors import SteerError
from steer.features.running import HIST_EDGES, RunningIndex
from steer.features.store import INDEX_FILENAME, SCHEMA, STORE_FORMAT
from steer.io import check_writable, file_sha256
from steer.model.positions import OUTLIER_RULE, CollectStats

log = logging.getLogger(__name__)

# Keys of the meta table that must match for a partial (or finished) index to be continued.
IDENTITY_KEYS = (
    "format",
    "sae_sha256",
    "model",
    "layer",
    "d_sae",
    "data_sha256",
    "max_tokens",
    "ctx_len",
    "top_k",
    "context_tokens",
    "hist_edges",
    "quantile_samples",
)


def index_identity(
    model: Any, sae: Any, sae_folder: Path, data: Sequence[str | Path], **settings: Any
) -> dict[str, Any]:
    """The meta rows that name what an index was built from: the SAE's weights, the model, the
    data files and the build's ``settings`` (``max_tokens``, ``ctx_len``, ``top_k``,
    ``context_tokens``, ``samples``, ``outlier_factor``)."""
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
        "max_tokens": settings["max_tokens"],
        "ctx_len": settings["ctx_len"],
        "top_k": settings["top_k"],
        "context_tokens": settings["context_tokens"],
        "quantile_samples": settings["samples"],
        "hist_edges": HIST_EDGES,
        "outlier_rule": OUTLIER_RULE.format(factor=settings["outlier_factor"]),
    }


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the index file at ``path``, with the resume table."""
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.execute(
        "CREATE TABLE IF NOT EXISTS resume(key TEXT PRIMARY KEY, value BLOB, state_json TEXT)"
    )
    columns = {row[1] for row in con.execute("PRAGMA table_info(resume)")}
    if "state_json" not in columns:  # a work file from before the JSON column
        con.execute("ALTER TABLE resume ADD COLUMN state_json TEXT")
    return con


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta table of an index file, or None when the file is not a readable index."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT key, value FROM meta").fetchall()
        finally:
            con.close()
        return {k: json.loads(v) for k, v in rows}
    except (sqlite3.Error, json.JSONDecodeError):
        return None


def check_index_target(db: str | Path, *, rebuild: bool) -> None:
    """Fail in one line, before a model loads, when ``db`` (a file, or a folder to hold
    ``features.sqlite``) cannot take an index: its folder cannot be written, or it is a file
    that is not an index (only ``rebuild`` replaces that)."""
    path = Path(db) / INDEX_FILENAME if Path(db).is_dir() else Path(db)
    check_writable(path, what="feature index")
    if path.exists() and not rebuild and read_meta(path) is None:
        raise SteerError(
            "exists but is not a feature index; pass --rebuild to replace it", where=str(path)
        )


def write_meta(con: sqlite3.Connection, meta: dict[str, Any]) -> None:
    """Set the meta rows (JSON values); the caller holds the transaction."""
    con.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [(k, json.dumps(v)) for k, v in meta.items()],
    )


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The identity keys on which an existing index's meta and the wanted one differ."""
    return [key for key in IDENTITY_KEYS if have.get(key) != want.get(key)]


def existing_index(
    db: Path, work: Path, want: dict[str, Any], *, rebuild: bool
) -> dict[str, Any] | None:
    """Check the index ``db`` and its work file ``work`` against the ``want``ed identity: one
    of other settings (or not an index) is refused unless ``rebuild``, a work file killed
    before it recorded anything is removed. Returns the meta of ``db`` when it is complete."""
    for path in (db, work):
        if not path.exists() or rebuild:
            continue
        have = read_meta(path)
        if path == work and not have:  # killed before it recorded anything: start afresh
            work.unlink()
            continue
        if have is None:
            raise SteerError(
                "exists but is not a feature index; pass --rebuild to replace it", where=str(path)
            )
        diff = differences(have, want)
        if diff:
            raise SteerError(
                f"is an index of different {', '.join(diff)}; pass --rebuild to replace it "
                "(or --db to build elsewhere)",
                where=str(path),
            )
        if path == db and have.get("status") == "complete" and not work.exists():
            return have
    return None


def _round_list(values: list[float]) -> list[float | int]:
    # 2 decimals, and plain 0 for silent tokens: most of a context is silent, so this keeps
    # the JSON (and the file) small.
    return [r if (r := round(v, 2)) != 0 else 0 for v in values]


def _feature_rows(state: RunningIndex, logits: tuple[list, list], tokens: int) -> list[tuple]:
    n_fired = state.n_fired.tolist()
    sums = state.sum_act.tolist()
    maxes = state.max_act.tolist()
    hists = state.hist.tolist()
    top, bottom = logits
    return [
        (
            f,
            n_fired[f],
            n_fired[f] / tokens if tokens else 0.0,
            round(sums[f] / n_fired[f], 4) if n_fired[f] else 0.0,
            round(maxes[f], 4),
            json.dumps(hists[f], separators=(",", ":")),
            json.dumps(top[f], ensure_ascii=False, separators=(",", ":")),
            json.dumps(bottom[f], ensure_ascii=False, separators=(",", ":")),
        )
        for f in range(state.d_sae)
    ]


def _context_row(
    f: int, rank: int, act: float, toks: list[int], acts: list[float], focus: int, vocab: list[str]
) -> tuple:
    width = next((i for i, t in enumerate(toks) if t < 0), len(toks))
    return (
        f,
        rank,
        round(act, 3),
        json.dumps([vocab[t] for t in toks[:width]], ensure_ascii=False, separators=(",", ":")),
        json.dumps(_round_list(acts[:width]), separators=(",", ":")),
        focus,
    )


def _rows(vals: list, acts: list, toks: list, focus: list, vocab: list[str]) -> list[tuple]:
    """Context rows from per-feature slot lists (best first); a slot with value <= 0 ends the
    feature's rows."""
    rows = []
    for f, feature_vals in enumerate(vals):
        for rank, val in enumerate(feature_vals):
            if val <= 0:
                break
            rows.append(
                _context_row(f, rank, val, toks[f][rank], acts[f][rank], focus[f][rank], vocab)
            )
    return rows


def _context_rows(state: RunningIndex, vocab: list[str]) -> list[tuple]:
    return _rows(
        state.top_vals.tolist(),
        state.top_acts.tolist(),
        state.top_tokens.tolist(),
        state.top_focus.tolist(),
        vocab,
    )


def _sample_rows(state: RunningIndex, vocab: list[str]) -> list[tuple]:
    """The quantile samples, strongest first within each feature (slot = rank by activation;
    ties keep the sampling order, so the rows are the same however the build was cut)."""
    # Filled slots hold a firing token (activation > 0); empty ones 0, sorted last.
    order = torch.argsort(-state.sample_vals, dim=1, stable=True)
    per_slot = order[..., None].expand(-1, -1, state.ctx)
    return _rows(
        state.sample_vals.gather(1, order).tolist(),
        state.sample_acts.gather(1, per_slot).tolist(),
        state.sample_tokens.gather(1, per_slot).tolist(),
        state.sample_focus.gather(1, order).tolist(),
        vocab,
    )


def flush(
    con: sqlite3.Connection,
    state: RunningIndex,
    meta: dict[str, Any],
    vocab: list[str],
    logits: tuple[list, list],
    *,
    tokens: int,
    resume_blob: tuple[bytes, str] | None,
) -> None:
    """Write the current statistics, contexts and samples, and the resume state, in one
    transaction."""
    feature_rows = _feature_rows(state, logits, tokens)
    context_rows = _context_rows(state, vocab)
    sample_rows = _sample_rows(state, vocab)
    with con:  # one transaction: a kill leaves the previous flush intact
        con.execute("DELETE FROM features")
        con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", feature_rows)
        con.execute("DELETE FROM contexts")
        con.executemany("INSERT INTO contexts VALUES (?, ?, ?, ?, ?, ?)", context_rows)
        con.execute("DELETE FROM samples")
        con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", sample_rows)
        write_meta(con, meta)
        con.execute("DELETE FROM resume")
        if resume_blob is not None:
            con.execute(
                "INSERT INTO resume(key, value, state_json) VALUES ('state', ?, ?)", resume_blob
            )


def compact(con: sqlite3.Connection) -> None:
    """Drop the resume state and VACUUM: a finished index holds nothing else."""
    con.execute("DROP TABLE resume")
    con.commit()
    con.execute("VACUUM")


def load_resume(con: sqlite3.Connection, like: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The resume state the last flush saved, or None when there is none: ``index`` (the
    running index's tensors, checked against the names, shapes and dtypes of ``like``),
    ``medians``, ``stats`` and ``windows_done``. A corrupt state is a one-line SteerError."""
    row = con.execute("SELECT value, state_json FROM resume WHERE key = 'state'").fetchone()
    if row is None:
        return None
    where = con.execute("PRAGMA database_list").fetchone()[2] or None
    if row[1] is None:
        # Written by an older steer as Python objects, whose loading could run code: not read,
        # the build starts over.
        log.warning("%s: resume state in the old format is not read; starting over", where)
        return None
    try:
        tensors = st.load(bytes(row[0]))
        if set(like) - set(tensors) == {"top_window"} and set(tensors) < set(like):
            # Saved before top contexts recorded their window (needed to break ties the same
            # way in any order): the slots cannot be completed, so the build starts over.
            log.warning("%s: resume state from an older steer is not read; starting over", where)
            return None
        values = json.loads(row[1])
        return {"index": _checked_tensors(tensors, like), **_checked_values(values)}
    except (safetensors.SafetensorError, ValueError, TypeError, RecursionError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"corrupt resume state: {reason}", where=where) from None


def _checked_tensors(
    tensors: dict[str, torch.Tensor], like: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    if set(tensors) != set(like):
        odd = sorted(set(tensors) ^ set(like))
        raise ValueError(f"tensor {odd[0]!r} is {'missing' if odd[0] in like else 'unexpected'}")
    for name, t in tensors.items():
        if t.shape != like[name].shape or t.dtype != like[name].dtype:
            want = f"{like[name].dtype} {list(like[name].shape)}"
            raise ValueError(f"tensor {name!r} is {t.dtype} {list(t.shape)}, expected {want}")
    return tensors


def _checked_values(values: Any) -> dict[str, Any]:
    """The JSON part, with the types the build sets: a number where a number goes."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    fields = {f.name for f in dataclasses.fields(CollectStats)}
    if not isinstance(values, dict):
        raise ValueError("the JSON is not an object")
    done, medians, stats = (values.get(k) for k in ("windows_done", "medians", "stats"))
    if not (isinstance(done, int) and not isinstance(done, bool) and done >= 0):
        raise ValueError(f"windows_done is {done!r}")
    if not (isinstance(medians, list) and all(number(m) for m in medians)):
        raise ValueError("medians is not a list of numbers")
    if not (isinstance(stats, dict) and all(k in fields and number(v) for k, v in stats.items())):
        raise ValueError("stats is not a map of position counts")
    return {"windows_done": done, "medians": medians, "stats": stats}


def resume_blob(state: RunningIndex, extra: dict[str, Any]) -> tuple[bytes, str]:
    """The resume state to save, as ``(tensors, json)``: the running index's exact state as
    safetensors bytes, and ``extra`` (medians, stats, windows done) as JSON."""
    tensors = {name: t.contiguous() for name, t in state.state_dict().items()}
    return st.save(tensors), json.dumps(extra)
