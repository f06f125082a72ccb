"""Build the feature index of an SAE: what every feature fires on, over a corpus.

For every feature: its top-k activating contexts (a short window of tokens around the token
where it fired most, with the activation of every token in it), how often it fires (density),
its mean activation over the tokens it fires on, its max, a histogram of its activations over
fixed log-spaced bins, and the output tokens its decoder direction promotes and suppresses.

The corpus is cut into token windows exactly as training and evaluation cut it
(:func:`steer.activations.build_windows`, seeded), encoded batch by batch, and folded into
running per-feature statistics with whole-tensor ops: one ``topk`` over ``[d_sae, k + batch]``
per batch keeps the best windows of every feature at once, never a Python loop over features.

The index is SQLite (schema in :mod:`steer.features.store`). It is built in
``<db>.partial`` beside the final file and flushed there in one transaction every
``flush_every`` windows, with the exact running state, so a killed build continues where it
stopped when the same command runs again; a finished build is VACUUMed and renamed over
``<db>``.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steer.corpus.documents import source_files
from steer.corpus.windows import build_windows
from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.features.store import INDEX_FILENAME, SCHEMA, STORE_FORMAT
from steer.io import file_sha256
from steer.model.positions import OUTLIER_RULE
from steer.model.trace import final_norm_weight

# Histogram bins: 4 per decade from 0.01 to 1000 (activations below/above land in the end bins).
HIST_EDGES: list[float] = [round(10 ** (-2 + i / 4), 6) for i in range(21)]
N_LOGITS = 10
# A context shows three times more tokens before the max token than after it: the model is
# causal, so what made the feature fire is on the left.
CONTEXT_TOKENS = 24
OUTLIER_FACTOR = 10.0
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


# --------------------------------------------------------------------------- output tokens


def output_logits(
    sae: Any, model: Any, vocab: Sequence[str], *, n: int = N_LOGITS, chunk: int = 512
) -> tuple[list[list], list[list]]:
    """Per feature, the ``n`` output tokens its decoder direction promotes most and least:
    ``([[token, value], ...] per feature, same for the most suppressed)``.

    The direction reaches the logits through the final RMSNorm and the unembedding. RMSNorm
    divides the whole vector by its RMS -- a positive scalar per position that cannot change
    which tokens a direction ranks first -- and then multiplies each dimension by its learned
    weight, which can: SmolLM2's final-norm weights vary a lot across dimensions, so leaving
    them out would rank tokens by dimensions the model itself scales down. Hence
    ``(W_dec[i] * norm_weight) @ W_U``.
    """
    w_u = model.hf.get_output_embeddings().weight.detach().float().cpu()  # [vocab, d_model]
    w_dec = sae.W_dec.detach().float().cpu()
    gain = final_norm_weight(model)
    if gain is not None:
        w_dec = w_dec * gain.cpu()
    top: list[list] = []
    bottom: list[list] = []
    with torch.inference_mode():
        for f0 in range(0, len(w_dec), chunk):
            logits = w_dec[f0 : f0 + chunk] @ w_u.T
            hi = logits.topk(n, dim=1)
            lo = (-logits).topk(n, dim=1)
            for vals, ids, sign, out in (
                (hi.values, hi.indices, 1, top),
                (lo.values, lo.indices, -1, bottom),
            ):
                for row_v, row_i in zip(vals.tolist(), ids.tolist(), strict=True):
                    out.append(
                        [[vocab[i], round(sign * v, 2)] for i, v in zip(row_i, row_v, strict=True)]
                    )
    return top, bottom


def token_strings(tokenizer: Any, size: int) -> list[str]:
    """The text of every token id below ``size`` (ids past the tokenizer read ``<id N>``).

    A byte-level token that is only part of a UTF-8 character shows as the replacement
    character; the context around it still reads right.
    """
    n = min(size, len(tokenizer))
    strings = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    return strings + [f"<id {i}>" for i in range(n, size)]


# --------------------------------------------------------------------------- running state


class RunningIndex:
    """Per-feature statistics and top-k contexts, updated one batch of windows at a time."""

    def __init__(self, d_sae: int, *, top_k: int, context_tokens: int, n_bins: int):
        self.d_sae, self.top_k, self.ctx = d_sae, top_k, context_tokens
        self.n_fired = torch.zeros(d_sae, dtype=torch.int64)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64)
        self.max_act = torch.zeros(d_sae, dtype=torch.float32)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.int64)
        # Slots hold the best windows so far, best first; an empty slot has value -1.
        self.top_vals = torch.full((d_sae, top_k), -1.0)
        self.top_acts = torch.zeros(d_sae, top_k, context_tokens)
        self.top_tokens = torch.full((d_sae, top_k, context_tokens), -1, dtype=torch.int32)
        self.top_focus = torch.zeros(d_sae, top_k, dtype=torch.int16)
        self.inner_edges = torch.tensor(HIST_EDGES[1:-1])

    def update(self, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """Fold in a batch: token ids ``[B, T]`` and activations ``[B, T, d_sae]`` (zero at
        positions that were not encoded)."""
        # Every statistic works on the firing entries only (a few % of the dense tensor, for a
        # TopK SAE k of d_sae per token): reductions over the dense [B, T, d_sae] cost ~10x more.
        win, pos, feat = acts.nonzero(as_tuple=True)
        vals = acts[win, pos, feat]
        d = self.d_sae
        self.n_fired += torch.bincount(feat, minlength=d)
        self.sum_act += torch.bincount(feat, weights=vals.double(), minlength=d)
        self.max_act.scatter_reduce_(0, feat, vals, "amax")
        n_bins = self.hist.shape[1]
        bins = torch.bucketize(vals, self.inner_edges)
        self.hist += torch.bincount(feat * n_bins + bins, minlength=d * n_bins).view(d, n_bins)
        # Each window's max per feature, and the position of that max.
        key = win * d + feat
        win_max = torch.zeros(acts.shape[0] * d).scatter_reduce_(0, key, vals, "amax")
        at_max = vals == win_max[key]
        win_pos = torch.zeros(acts.shape[0] * d, dtype=torch.long)
        win_pos[key[at_max]] = pos[at_max]
        self._update_top(ids, acts, win_max.view(-1, d), win_pos.view(-1, d))

    def _update_top(
        self, ids: torch.Tensor, acts: torch.Tensor, win_max: torch.Tensor, win_pos: torch.Tensor
    ) -> None:
        # One candidate per (feature, window): the window's max token. Windows where the
        # feature is silent get -1, so they never displace anything.
        t_len = acts.shape[1]
        cand = torch.where(win_max > 0, win_max, torch.full_like(win_max, -1.0)).T
        merged = torch.cat([self.top_vals, cand], dim=1)  # [d_sae, k + B]
        vals, src = merged.topk(self.top_k, dim=1)
        keep_old = src.clamp(max=self.top_k - 1)
        c = self.ctx
        self.top_acts = self.top_acts.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.top_tokens = self.top_tokens.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.top_focus = self.top_focus.gather(1, keep_old)
        feat, slot = ((src >= self.top_k) & (vals > 0)).nonzero(as_tuple=True)
        if len(feat):
            win = src[feat, slot] - self.top_k
            pos = win_pos[win, feat]
            width = min(c, t_len)
            start = (pos - (width - 1 - width // 4)).clamp(min=0).clamp(max=t_len - width)
            cols = start[:, None] + torch.arange(width)
            self.top_acts[feat, slot] = 0
            self.top_tokens[feat, slot] = -1
            self.top_acts[feat, slot, :width] = acts[win[:, None], cols, feat[:, None]]
            self.top_tokens[feat, slot, :width] = ids[win[:, None], cols].int()
            self.top_focus[feat, slot] = (pos - start).short()
        self.top_vals = vals

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The exact running state (to resume from)."""
        names = ("n_fired", "sum_act", "max_act", "hist", "top_vals", "top_acts", "top_tokens")
        return {name: getattr(self, name) for name in (*names, "top_focus")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            if getattr(self, name).shape != value.shape:
                raise SteerError(f"resume state {name} has shape {list(value.shape)}")
            setattr(self, name, value)


# --------------------------------------------------------------------------- database


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.execute("CREATE TABLE IF NOT EXISTS resume(key TEXT PRIMARY KEY, value BLOB)")
    return con


def _read_meta(path: Path) -> dict[str, Any] | None:
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


def _differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [key for key in IDENTITY_KEYS if have.get(key) != want.get(key)]


def _round_list(values: list[float]) -> list[float | int]:
    # 2 decimals, and plain 0 for silent tokens: most of a context is silent, so this keeps
    # the JSON (and the file) small.
    return [r if (r := round(v, 2)) != 0 else 0 for v in values]


def _flush(
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
    n_fired = state.n_fired.tolist()
    sums = state.sum_act.tolist()
    maxes = state.max_act.tolist()
    hists = state.hist.tolist()
    top, bottom = logits
    feature_rows = [
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
    with con:  # one transaction: a kill leaves the previous flush intact
        con.execute("DELETE FROM features")
        con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", feature_rows)
        con.execute("DELETE FROM contexts")
        con.executemany("INSERT INTO contexts VALUES (?, ?, ?, ?, ?, ?)", context_rows)
        con.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in meta.items()],
        )
        con.execute("DELETE FROM resume")
        if resume_blob is not None:
            con.execute("INSERT INTO resume VALUES ('state', ?)", (resume_blob,))


def _load_resume(con: sqlite3.Connection) -> dict[str, Any] | None:
    row = con.execute("SELECT value FROM resume WHERE key = 'state'").fetchone()
    if row is None:
        return None
    return torch.load(io.BytesIO(row[0]), weights_only=True)


def _blob(state: RunningIndex, extra: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"index": state.state_dict(), **extra}, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- build


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
        "hist_edges": HIST_EDGES,
        "outlier_rule": OUTLIER_RULE.format(factor=OUTLIER_FACTOR),
    }


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
    batch_windows: int = 16,
    flush_every: int = 256,
    rebuild: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> BuildResult:
    """Index ``sae`` (at its layer of ``model``) over the texts in ``data``.

    Writes ``db`` (default: ``features.sqlite`` in ``sae_folder``). Running it again with the
    same SAE weights, model, data and settings continues a partial build, or does nothing when
    the index is complete; anything else is refused unless ``rebuild``. ``stop_after`` ends the
    run at the first batch boundary after that many windows in total, leaving a partial index
    (for tests and for splitting a long build).
    """
    t0 = time.perf_counter()
    if top_k < 1 or context_tokens < 1:
        raise SteerError("--top-k and the context size must be at least 1")
    sae_folder = Path(sae_folder)
    db = Path(db) if db is not None else default_db_path(sae_folder)
    work = partial_path(db)
    want = _identity(
        model,
        sae,
        sae_folder,
        data,
        max_tokens=max_tokens,
        ctx_len=ctx_len,
        top_k=top_k,
        context_tokens=context_tokens,
    )
    for path in (db, work):
        if not path.exists() or rebuild:
            continue
        have = _read_meta(path)
        if path == work and not have:  # killed before it recorded anything: start afresh
            work.unlink()
            continue
        if have is None:
            raise SteerError(
                "exists but is not a feature index; pass --rebuild to replace it", where=str(path)
            )
        diff = _differences(have, want)
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
    if rebuild:
        work.unlink(missing_ok=True)

    windows = build_windows(
        model.tokenizer, [str(p) for p in data], ctx_len=ctx_len, n_tokens=max_tokens
    )
    if len(windows) == 0:
        raise SteerError(f"the data holds no window of {ctx_len} tokens")
    vocab_size = int(model.hf.get_output_embeddings().weight.shape[0])
    vocab = token_strings(model.tokenizer, max(vocab_size, len(model.tokenizer)))
    logits = output_logits(sae, model, vocab)
    d_sae = int(sae.cfg.d_sae)
    width = min(context_tokens, ctx_len)
    state = RunningIndex(d_sae, top_k=top_k, context_tokens=width, n_bins=len(HIST_EDGES) - 1)
    encoder = BatchEncoder(model, sae, outlier_factor=OUTLIER_FACTOR)

    work.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(work)
    done = 0
    try:
        saved = _load_resume(con)
        if saved is not None:
            state.load_state_dict(saved["index"])
            encoder.outliers._medians = list(saved["medians"])
            for key, value in saved["stats"].items():
                setattr(encoder.stats, key, value)
            done = int(saved["windows_done"])
        resumed = done > 0
        meta = {**want, "windows_total": len(windows), "status": "partial"}
        if not resumed:  # the identity goes in first, so a kill before the first flush resumes
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in {**meta, "windows_done": 0}.items()],
                )
        # Batches always start at multiples of batch_windows, as in an unbroken run, so the
        # outlier filter sees the same batches and a resumed index equals an unbroken one.
        end = len(windows)
        if stop_after is not None:
            end = min(end, -(-stop_after // batch_windows) * batch_windows)

        prev_seconds = (_read_meta(work) or {}).get("build_seconds", 0.0) if resumed else 0.0

        def flush(final: bool) -> None:
            stats = dict(vars(encoder.stats))
            meta.update(
                windows_done=done,
                tokens_indexed=encoder.stats.kept,
                positions=stats,
                status="complete" if final else "partial",
                build_seconds=round(prev_seconds + time.perf_counter() - t0, 1),
            )
            blob = None
            if not final:
                extra = {"windows_done": done, "medians": encoder.outliers._medians, "stats": stats}
                blob = _blob(state, extra)
            _flush(con, state, meta, vocab, logits, tokens=encoder.stats.kept, resume_blob=blob)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(windows), initial=done, desc="index", unit="win", disable=not progress)
        since_flush = 0
        while done < end:
            ids = windows[done : min(done + batch_windows, end)].long()
            acts, _keep = encoder(ids)
            state.update(ids, acts)
            done += len(ids)
            since_flush += len(ids)
            bar.update(len(ids))
            if since_flush >= flush_every and done < end:
                flush(final=False)
                since_flush = 0
        bar.close()
        complete = done >= len(windows)
        flush(final=complete)
        if complete:
            con.execute("DROP TABLE resume")
            con.commit()
            con.execute("VACUUM")
    finally:
        con.close()
    if complete:
        # Not steer.io.atomic_path: its temporary file is private to one process and is
        # deleted on failure, and a build's work file must outlive a kill to be resumed.
        with open(work, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(work, db)
    status = ("resumed" if resumed else "built") if complete else "partial"
    return BuildResult(
        db if complete else work,
        status,
        done,
        encoder.stats.kept,
        time.perf_counter() - t0,
        meta,
    )
