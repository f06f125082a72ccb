"""Read a feature index (``features.sqlite`` beside an SAE): the schema and the read API.

Tables::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- JSON values: sae, sae_sha256, model,
                                                    -- layer, d_sae, data, tokens_indexed,
                                                    -- ctx_len, top_k, hist_edges, status,
                                                    -- windows_done, ...
    features(id, n_fired, density, mean_act, max_act, hist, top_logits, bottom_logits)
    contexts(feature, rank, act, tokens, acts, focus)  -- top contexts, rank 0 = strongest
    samples(feature, rank, act, tokens, acts, focus)   -- quantile samples: a uniform random
                                                       -- sample of the tokens the feature
                                                       -- fired on, rank 0 = strongest

The index is written by :mod:`steer.features.index`; this module only reads it, and opens
the file read-only. ``samples`` came after the first indexes: an index without it opens and
reads as before, with :attr:`FeatureRecord.samples` ``None`` (rebuilding it adds them).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer.errors import SteerError

INDEX_FILENAME = "features.sqlite"
STORE_FORMAT = "steer-features/1"
# Top contexts and quantile samples are rows of the same shape. Rows are found by
# (feature, rank) only, so WITHOUT ROWID: no separate key index to store.
_CONTEXT_COLUMNS = """(
    feature INTEGER,
    rank INTEGER,
    act REAL,
    tokens TEXT,
    acts TEXT,
    focus INTEGER,
    PRIMARY KEY(feature, rank)
) WITHOUT ROWID"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS features(
    id INTEGER PRIMARY KEY,
    n_fired INTEGER,
    density REAL,
    mean_act REAL,
    max_act REAL,
    hist TEXT,
    top_logits TEXT,
    bottom_logits TEXT
);
CREATE TABLE IF NOT EXISTS contexts{_CONTEXT_COLUMNS};
CREATE TABLE IF NOT EXISTS samples{_CONTEXT_COLUMNS};
"""


@dataclass(frozen=True)
class Context:
    """One context: its tokens, each token's activation, and which token it is about
    (``focus``: the feature's max in a top context, the sampled token in a quantile sample),
    whose activation is ``act``."""

    act: float
    tokens: list[str]
    acts: list[float]
    focus: int


@dataclass(frozen=True)
class FeatureRecord:
    """Everything the index knows about one feature."""

    id: int
    n_fired: int
    density: float
    mean_act: float
    max_act: float
    hist: list[int]
    top_logits: list[tuple[str, float]]
    bottom_logits: list[tuple[str, float]]
    contexts: list[Context]
    # Quantile samples, strongest first; None when the index has no samples table.
    samples: list[Context] | None = None


@dataclass(frozen=True)
class FeatureSummary:
    """One line of the feature list: the statistics, and the tokens it fires on most (the max
    token of its strongest contexts, most frequent first)."""

    id: int
    n_fired: int
    density: float
    mean_act: float
    max_act: float
    top_tokens: list[str]
    top_logits: list[str]


def index_file(sae_folder_or_db: str | Path) -> Path:
    """The index file for an SAE folder (``features.sqlite`` inside it) or a db path."""
    path = Path(sae_folder_or_db)
    return path / INDEX_FILENAME if path.is_dir() else path


class FeatureIndex:
    """A read-only view of a feature index. Open it with :meth:`open`."""

    def __init__(self, path: Path, con: sqlite3.Connection, meta: dict[str, Any]):
        self.path = path
        self._con = con
        self.meta = meta
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master")}
        self.has_samples = "samples" in tables

    @classmethod
    def open(cls, sae_folder_or_db: str | Path, *, sae: str | None = None) -> FeatureIndex:
        """Open the index of the SAE in a folder, or an index file.

        ``sae`` is how the user named the SAE, for the message that says how to build a
        missing index.
        """
        path = index_file(sae_folder_or_db)
        name = sae or str(sae_folder_or_db)
        if not path.is_file():
            partial = path.with_name(path.name + ".partial")
            how = f"steer features index {name} --data FILE"
            if partial.is_file():
                raise SteerError(
                    f"the feature index of {name} is not finished; rerun the same `steer "
                    f"features index` command to complete it (or look at it with --db {partial})"
                )
            raise SteerError(f"no feature index for {name}; build it with: {how}")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
            con.execute("SELECT id FROM features LIMIT 1").fetchall()
            con.execute("SELECT feature FROM contexts LIMIT 1").fetchall()
        except (sqlite3.Error, json.JSONDecodeError) as exc:
            raise SteerError(f"not a feature index ({exc})", where=str(path)) from None
        if meta.get("format") != STORE_FORMAT:
            raise SteerError(
                f"not a feature index (format {meta.get('format')!r})", where=str(path)
            )
        return cls(path, con, meta)

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()

    def __enter__(self) -> FeatureIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def d_sae(self) -> int:
        """How many features the indexed SAE has."""
        return int(self.meta["d_sae"])

    @property
    def complete(self) -> bool:
        """Whether the build went over all its data."""
        return self.meta.get("status") == "complete"

    def check_sae(self, sae_folder: Path) -> None:
        """Raise unless the index was built from the weights now in ``sae_folder`` (an SAE
        retrained under the same name has other features behind the same ids)."""
        from steer.io import file_sha256
        from steer.sae.formats import WEIGHTS_FILENAME

        weights = Path(sae_folder) / WEIGHTS_FILENAME
        want = self.meta.get("sae_sha256")
        if weights.is_file() and want and file_sha256(weights) != want:
            raise SteerError(
                "the feature index was built for other weights of this SAE; rebuild it with: "
                f"steer features index {sae_folder} --data FILE --rebuild",
                where=str(self.path),
            )

    def has(self, feature: int) -> bool:
        """Whether ``feature`` is a row of the index."""
        row = self._con.execute("SELECT 1 FROM features WHERE id = ?", (feature,)).fetchone()
        return row is not None

    def feature(self, feature: int) -> FeatureRecord:
        """The full record of one feature; an id outside the SAE is a :class:`SteerError`."""
        if not 0 <= feature < self.d_sae:
            raise SteerError(f"feature id {feature} out of range [0, {self.d_sae})")
        row = self._con.execute(
            "SELECT id, n_fired, density, mean_act, max_act, hist, top_logits, bottom_logits "
            "FROM features WHERE id = ?",
            (feature,),
        ).fetchone()
        if row is None:
            raise SteerError(f"feature {feature} is not in the index", where=str(self.path))
        contexts = self._contexts("contexts", feature)
        samples = self._contexts("samples", feature) if self.has_samples else None
        return FeatureRecord(
            id=row[0],
            n_fired=row[1],
            density=row[2],
            mean_act=row[3],
            max_act=row[4],
            hist=json.loads(row[5]),
            top_logits=[(t, v) for t, v in json.loads(row[6])],
            bottom_logits=[(t, v) for t, v in json.loads(row[7])],
            contexts=contexts,
            samples=samples,
        )

    def _contexts(self, table: str, feature: int) -> list[Context]:
        # ``table`` is one of two names written here, never user input.
        return [
            Context(act=act, tokens=json.loads(toks), acts=json.loads(acts), focus=focus)
            for act, toks, acts, focus in self._con.execute(
                f"SELECT act, tokens, acts, focus FROM {table} WHERE feature = ? ORDER BY rank",
                (feature,),
            )
        ]

    def features(self, *, top_tokens: int = 5, top_logits: int = 5) -> list[FeatureSummary]:
        """A summary row per feature, by id."""
        fires: dict[int, dict[str, int]] = {}
        # The max token of each context, read by SQLite's JSON functions without parsing rows.
        for fid, tok in self._con.execute(
            "SELECT feature, json_extract(tokens, '$[' || focus || ']') FROM contexts "
            "ORDER BY feature, rank"
        ):
            counts = fires.setdefault(fid, {})
            counts[tok] = counts.get(tok, 0) + 1
        out = []
        for fid, n_fired, density, mean_act, max_act, logits in self._con.execute(
            "SELECT id, n_fired, density, mean_act, max_act, top_logits FROM features ORDER BY id"
        ):
            counts = fires.get(fid, {})
            ranked = sorted(counts, key=lambda t: -counts[t])[:top_tokens]
            out.append(
                FeatureSummary(
                    id=fid,
                    n_fired=n_fired,
                    density=density,
                    mean_act=mean_act,
                    max_act=max_act,
                    top_tokens=ranked,
                    top_logits=[t for t, _ in json.loads(logits)[:top_logits]],
                )
            )
        return out

    def densities(self) -> dict[int, float]:
        """Feature id -> density, for every feature in the index."""
        return dict(self._con.execute("SELECT id, density FROM features"))
