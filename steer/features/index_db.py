"""The SQLite side of a feature-index build: the work file, its rows and its resume state.

The tables are those of :mod:`steer.features.store` plus ``resume``, which holds the exact
running state (a ``torch.save`` blob) while a build is partial and is dropped when it completes.
Every flush rewrites the rows and the resume state in one transaction, so a kill leaves the
previous flush intact.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import torch

from steer.features.running import RunningIndex
from steer.features.store import SCHEMA

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
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the index file at ``path``, with the resume table."""
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.execute("CREATE TABLE IF NOT EXISTS resume(key TEXT PRIMARY KEY, value BLOB)")
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


def write_meta(con: sqlite3.Connection, meta: dict[str, Any]) -> None:
    """Set the meta rows (JSON values); the caller holds the transaction."""
    con.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [(k, json.dumps(v)) for k, v in meta.items()],
    )


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The identity keys on which an existing index's meta and the wanted one differ."""
    return [key for key in IDENTITY_KEYS if have.get(key) != want.get(key)]


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


def _context_rows(state: RunningIndex, vocab: list[str]) -> list[tuple]:
    vals = state.top_vals.tolist()
    acts = state.top_acts.tolist()
    toks = state.top_tokens.tolist()
    focus = state.top_focus.tolist()
    context_rows = []
    for f in range(state.d_sae):
        for rank in range(state.top_k):
            if vals[f][rank] <= 0:
                break
            row_toks = toks[f][rank]
            width = next((i for i, t in enumerate(row_toks) if t < 0), len(row_toks))
            context_rows.append(
                (
                    f,
                    rank,
                    round(vals[f][rank], 3),
                    json.dumps(
                        [vocab[t] for t in row_toks[:width]],
                        ensure_ascii=False,
                        separators=(",", ":"),
                    ),
                    json.dumps(_round_list(acts[f][rank][:width]), separators=(",", ":")),
                    focus[f][rank],
                )
            )
    return context_rows


def flush(
    con: sqlite3.Connection,
    state: RunningIndex,
    meta: dict[str, Any],
    vocab: list[str],
    logits: tuple[list, list],
    *,
    tokens: int,
    resume_blob: bytes | None,
) -> None:
    """Write the current statistics and contexts, and the resume state, in one transaction."""
    feature_rows = _feature_rows(state, logits, tokens)
    context_rows = _context_rows(state, vocab)
    with con:  # one transaction: a kill leaves the previous flush intact
        con.execute("DELETE FROM features")
        con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", feature_rows)
        con.execute("DELETE FROM contexts")
        con.executemany("INSERT INTO contexts VALUES (?, ?, ?, ?, ?, ?)", context_rows)
        write_meta(con, meta)
        con.execute("DELETE FROM resume")
        if resume_blob is not None:
            con.execute("INSERT INTO resume VALUES ('state', ?)", (resume_blob,))


def compact(con: sqlite3.Connection) -> None:
    """Drop the resume state and VACUUM: a finished index holds nothing else."""
    con.execute("DROP TABLE resume")
    con.commit()
    con.execute("VACUUM")


def load_resume(con: sqlite3.Connection) -> dict[str, Any] | None:
    """The resume state the last flush saved, or None when there is none."""
    row = con.execute("SELECT value FROM resume WHERE key = 'state'").fetchone()
    if row is None:
        return None
    return torch.load(io.BytesIO(row[0]), weights_only=True)


def resume_blob(state: RunningIndex, extra: dict[str, Any]) -> bytes:
    """The resume state to save: the running index's exact state and ``extra``."""
    buf = io.BytesIO()
    torch.save({"index": state.state_dict(), **extra}, buf)
    return buf.getvalue()
