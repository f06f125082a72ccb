"""Residual-stream activations for SAE training and evaluation.

Text files become documents, documents become fixed-length token windows, and windows go
through the model (nnsight, stopped right after the layer we want) to give activations at the
output of block ``layer``. Positions the SAE should not learn are removed and counted:
special tokens (BOS, chat markers, ``<|endoftext|>``, padding), position 0 of every window (the
attention sink, norm ~25,000 on SmolLM2 against a typical ~140) and outliers far above the
running median norm. Activations are streamed; a shuffling buffer (here) and a resumable
on-disk cache (:mod:`steer.activation_cache`) keep only a bounded amount in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from steer.errors import SteerError

log = logging.getLogger(__name__)

_DOC_SPLIT = re.compile(r"\n\s*\n|<\|endoftext\|>")
_HUMAN, _ASSISTANT = "### Human:", " ### Assistant: "
OUTLIER_RULE = (
    "drop special tokens, position 0 of each window, and norm > {factor} x running median"
)


# --------------------------------------------------------------------------- text sources


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset streamed with the ``datasets`` library (needs network and
    ``pip install steer[hf]``). Records are read in order; ``max_rows`` bounds how many."""

    name: str
    split: str = "train"
    text_field: str = "text"
    config: str | None = None
    max_rows: int | None = None

    def __str__(self) -> str:
        config = f"/{self.config}" if self.config else ""
        return f"hf:{self.name}{config}:{self.split}"


DataSource = str | Path | HFSource


def source_files(paths: Iterable[DataSource]) -> list[Path]:
    """Expand folders to the ``.txt``/``.json``/``.jsonl`` files inside them (sorted).
    Hugging Face sources have no local files and are skipped."""
    out: list[Path] = []
    for raw in paths:
        if isinstance(raw, HFSource):
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".json", ".jsonl"))
            if not found:
                raise SteerError("folder holds no .txt, .json or .jsonl files", where=str(path))
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise SteerError("data file not found", where=str(path))
    return out


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file (recorded in SAE metadata so a run can be traced to its data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_documents(path: str | Path, tokenizer: Any) -> list[str]:
    """The documents in one file, as the model should see them.

    ``.txt``: split on blank lines and ``<|endoftext|>``. ``.jsonl``/``.json``: records with a
    ``text`` field (plain text, or dolly's ``### Human: ... ### Assistant: ...``, which is
    rendered as a chat) or ``instruction``/``input``/``output`` (+ optional ``history``),
    rendered with the tokenizer's chat template.
    """
    path = Path(path)
    if not path.is_file():
        raise SteerError("data file not found", where=str(path))
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SteerError("data file is empty", where=str(path))
    if path.suffix == ".txt":
        docs = [d.strip() for d in _DOC_SPLIT.split(text)]
    elif path.suffix in (".json", ".jsonl"):
        records = _json_records(text, path)
        docs = [_render_record(rec, tokenizer, f"{path}:{i + 1}") for i, rec in enumerate(records)]
    else:
        raise SteerError("unsupported data file (use .txt, .json or .jsonl)", where=str(path))
    docs = [d for d in docs if d]
    if not docs:
        raise SteerError("data file holds no text", where=str(path))
    return docs


def _load_dataset(source: HFSource) -> Iterable[Any]:
    """The records of ``source``, streamed (the one place that calls ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise SteerError(
            "reading Hugging Face datasets needs the datasets library: pip install steer[hf]",
            where=str(source),
        ) from None
    try:
        rows = datasets.load_dataset(source.name, source.config, split=source.split, streaming=True)
    except Exception as exc:  # network, unknown repo or split: datasets raises many kinds
        raise SteerError(
            f"cannot load the dataset: {_first_line(exc)}", where=str(source)
        ) from None
    return rows


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _stream(source: HFSource) -> Iterator[Any]:
    # Streaming reads over the network while iterating, so failures can come at any record.
    rows = iter(_load_dataset(source))
    for i in itertools.count(1):
        if source.max_rows is not None and i > source.max_rows:
            return
        try:
            yield next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise SteerError(
                f"cannot read record {i}: {_first_line(exc)}", where=str(source)
            ) from None


def iter_hf_documents(source: HFSource, tokenizer: Any) -> Iterator[str]:
    """The documents of a Hugging Face dataset, rendered like JSONL records: the
    ``text_field`` of each record (chat-formatted ``### Human:`` text goes through the chat
    template). Empty documents are skipped; at most ``max_rows`` records are read."""
    for i, rec in enumerate(_stream(source)):
        where = f"{source}:{i + 1}"
        if not isinstance(rec, dict):
            raise SteerError("record is not a mapping", where=where)
        text = _field(rec, source.text_field, where)
        if text.startswith(_HUMAN) and _ASSISTANT in text:
            text = _render_record({"text": text}, tokenizer, where)
        if text.strip():
            yield text.strip()


def _json_records(text: str, path: Path) -> list[Any]:
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise SteerError("a .json data file must hold a list of records", where=str(path))
            return data
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SteerError(f"invalid JSON at line {exc.lineno}: {exc.msg}", where=str(path)) from None


def _render_record(rec: Any, tokenizer: Any, where: str) -> str:
    if not isinstance(rec, dict):
        raise SteerError("record is not a JSON object", where=where)
    if "instruction" in rec:
        prompt = _field(rec, "instruction", where)
        extra = rec.get("input") or ""
        if extra:
            prompt = f"{prompt}\n\n{_field(rec, 'input', where)}"
        turns = [(str(u), str(a)) for u, a in rec.get("history") or []]
        turns.append((prompt, _field(rec, "output", where)))
        return _chat(tokenizer, turns, where)
    text = _field(rec, "text", where)
    if text.startswith(_HUMAN) and _ASSISTANT in text:
        user, answer = text[len(_HUMAN) :].split(_ASSISTANT, 1)
        return _chat(tokenizer, [(user.strip(), answer.strip())], where)
    return text.strip()


def _field(rec: dict, name: str, where: str) -> str:
    if name not in rec:
        raise SteerError(f"record has no {name!r} field", where=where)
    if not isinstance(rec[name], str):
        raise SteerError(f"field {name!r} is {type(rec[name]).__name__}, not text", where=where)
    return rec[name]


def _chat(tokenizer: Any, turns: list[tuple[str, str]], where: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise SteerError("instruction data needs a model with a chat template", where=where)
    messages = []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


# --------------------------------------------------------------------------- token windows


def special_token_ids(tokenizer: Any) -> list[int]:
    """Every special token id: BOS/EOS/pad plus added tokens flagged special (chat markers)."""
    ids = set(tokenizer.all_special_ids)
    for idx, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return sorted(ids)


def _separator_id(tokenizer: Any) -> int:
    # Pretraining data separated documents with <|endoftext|>; fall back to EOS elsewhere.
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(sep, int) and sep != tokenizer.unk_token_id:
        return sep
    return int(tokenizer.eos_token_id)


def pack_windows(
    tokenizer: Any, docs: Iterable[str], ctx_len: int, *, max_windows: int | None = None
) -> torch.Tensor:
    """Concatenate tokenized documents (separator between them) and cut ``[n, ctx_len]``
    windows; the incomplete tail is dropped. With ``max_windows`` reading stops once that many
    windows are full (so a streamed source is read only as far as needed)."""
    sep = _separator_id(tokenizer)
    stream: list[int] = []
    docs = iter(docs)
    # Batches of 512 keep the fast tokenizer busy without one huge list.
    while batch := list(itertools.islice(docs, 512)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(sep)
        if max_windows is not None and len(stream) >= max_windows * ctx_len:
            break
    n = len(stream) // ctx_len if max_windows is None else min(max_windows, len(stream) // ctx_len)
    return torch.tensor(stream[: n * ctx_len], dtype=torch.int32).view(n, ctx_len)


def build_windows(
    tokenizer: Any,
    paths: Sequence[DataSource],
    *,
    ctx_len: int = 128,
    n_tokens: int | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Token windows from several sources, mixed by ``weights`` and shuffled (seeded).

    ``paths`` may name folders (each counts as one source) and :class:`HFSource` datasets. With
    ``n_tokens`` each source gives its weighted share of ``n_tokens // ctx_len`` windows,
    sampled at random; a source too small for its share gives all it has. Without it, every
    window of every source is used. A Hugging Face dataset is streamed only until its share is
    full (its first records, in order, then shuffled), or to ``max_rows``.
    """
    if weights is not None and len(weights) != len(paths):
        raise SteerError(f"{len(weights)} data weights for {len(paths)} data sources")
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    total_w = sum(weights)
    for path, w in zip(paths, weights, strict=True):
        want = None if n_tokens is None else round(n_tokens // ctx_len * w / total_w)
        if isinstance(path, HFSource):
            docs: Iterable[str] = iter_hf_documents(path, tokenizer)
            wins = pack_windows(tokenizer, docs, ctx_len, max_windows=want)
        else:
            docs = [d for f in source_files([path]) for d in read_documents(f, tokenizer)]
            wins = pack_windows(tokenizer, docs, ctx_len)
        if len(wins) == 0:
            raise SteerError(f"source has fewer than {ctx_len} tokens", where=str(path))
        want = len(wins) if want is None else want
        if want > len(wins):
            log.warning("%s: %d windows wanted, only %d available", path, want, len(wins))
        pick = torch.randperm(len(wins), generator=gen)[: min(want, len(wins))]
        chosen.append(wins[pick])
    windows = torch.cat(chosen)
    return windows[torch.randperm(len(windows), generator=gen)]


# --------------------------------------------------------------------------- activations


@dataclass
class CollectStats:
    """What collection saw and what it dropped (reported in SAE metadata and eval output)."""

    tokens: int = 0
    kept: int = 0
    special: int = 0
    first_position: int = 0
    outliers: int = 0
    max_outlier_norm: float = 0.0
    median_norm: float = 0.0


@dataclass
class OutlierFilter:
    """Drops positions whose norm exceeds ``factor`` x the running median norm.

    The reference is the median of per-batch medians, so one odd batch cannot move it much.
    """

    factor: float = 10.0
    _medians: list[float] = field(default_factory=list)

    def keep(self, norms: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if candidates.any():
            self._medians.append(float(norms[candidates].median()))
        if not self._medians:
            return candidates
        ref = float(np.median(self._medians))
        return candidates & (norms <= self.factor * ref)

    @property
    def reference(self) -> float:
        return float(np.median(self._medians)) if self._medians else 0.0


class ActivationBatch(NamedTuple):
    """Kept activations ``[N, d]`` with where each came from (window row, position)."""

    acts: torch.Tensor
    window: torch.Tensor
    position: torch.Tensor


def layer_output(model: Any, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after block ``layer`` for ``ids`` ``[B, T]``: ``[B, T, d]``.

    nnsight stops the forward pass right after the layer (2.9x a full forward on SmolLM2 L12).
    """
    envoy = model.layer_envoy(layer)
    # inference_mode: nnsight traces with autograd on otherwise (1.5-2.4x slower).
    with torch.inference_mode():  # noqa: SIM117 - nnsight needs each traced `with` on its own line
        with model.lm.trace(ids.long()) as tracer:
            hidden = envoy.output.save()
            tracer.stop()
    return hidden.float()


def keep_mask(
    ids: torch.Tensor,
    hidden: torch.Tensor,
    special: torch.Tensor,
    outliers: OutlierFilter,
    stats: CollectStats | None = None,
) -> torch.Tensor:
    """Which positions of ``ids`` ``[B, T]`` an SAE should see; updates ``stats``."""
    is_special = torch.isin(ids, special)
    first = torch.zeros_like(is_special)
    first[:, 0] = True
    candidates = ~is_special & ~first
    norms = hidden.norm(dim=-1)
    keep = outliers.keep(norms, candidates)
    if stats is not None:
        dropped = candidates & ~keep
        stats.tokens += ids.numel()
        stats.special += int(is_special.sum())
        stats.first_position += int((first & ~is_special).sum())
        stats.outliers += int(dropped.sum())
        stats.kept += int(keep.sum())
        if dropped.any():
            stats.max_outlier_norm = max(stats.max_outlier_norm, float(norms[dropped].max()))
        stats.median_norm = outliers.reference
    return keep


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
