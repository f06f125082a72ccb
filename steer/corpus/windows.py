"""Token windows: documents tokenized, packed with a separator and cut to a fixed length,
mixed across sources by weight and shuffled (seeded), the way training and indexing read text.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from steer.corpus.documents import (
    DataSource,
    HFSource,
    iter_hf_documents,
    read_documents,
    source_files,
)
from steer.errors import SteerError

log = logging.getLogger(__name__)


def _separator_id(tokenizer: Any) -> int:
    # Pretraining data separated documents with <|endoftext|>; fall back to EOS elsewhere.
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(sep, int) and sep != tokenizer.unk_token_id:
        return sep
    return int(tokenizer.eos_token_id)


def pack_windows(
    tokenizer: Any,
    docs: Iterable[str],
    ctx_len: int,
    *,
    max_windows: int | None = None,
    pad_tail: bool = False,
) -> torch.Tensor:
    """Concatenate tokenized documents (separator between them) and cut ``[n, ctx_len]``
    windows. With ``max_windows`` reading stops once that many windows are full (so a streamed
    source is read only as far as needed). The incomplete tail is dropped, or with ``pad_tail``
    kept as a last window filled up with separators: special tokens, which no SAE step ever
    reads, so the tail's real tokens count and nothing else does."""
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
    tail = stream[n * ctx_len :]
    if pad_tail and tail.count(sep) < len(tail) and (max_windows is None or n < max_windows):
        stream = stream[: n * ctx_len] + tail + [sep] * (ctx_len - len(tail))
        n += 1
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
            if len(wins) == 0:  # shorter than one window: used, padded, rather than refused
                wins = pack_windows(tokenizer, docs, ctx_len, pad_tail=True)
        if len(wins) == 0:
            raise SteerError("source holds no text", where=str(path))
        want = len(wins) if want is None else want
        if want > len(wins):
            log.warning("%s: %d windows wanted, only %d available", path, want, len(wins))
        pick = torch.randperm(len(wins), generator=gen)[: min(want, len(wins))]
        chosen.append(wins[pick])
    windows = torch.cat(chosen)
    return windows[torch.randperm(len(windows), generator=gen)]
