"""Labelled text sets for judging detectors, and the one pass that reads them.

A labelled set is a JSON-lines file, one record per text: ``{"text": ..., "label": 1}`` (1 or
``true``: a text a detector should flag; 0 or ``false``: one it should not), or two plain
text files, one of positives and one of negatives (:func:`labelled_from_texts`). Every record of
a set goes through the model once, up to the SAE's layer; from that pass
:func:`encode_labelled` keeps what every detector kind reads:

* ``sae_max`` ``[n, d_sae]``: each SAE feature's max over the text's kept positions (what
  ``steer features contrast`` ranks and ``steer monitor score`` scores);
* ``resid_mean`` ``[n, d_model]``: the residual stream averaged over the same positions (what
  ``steer probe`` trains on);
* the non-zero SAE activations of every kept token (``tok_*``, a CSR layout), so that a
  per-token monitor (one that runs during generation) can be scored without a second pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.io import json_lines

MIN_PER_CLASS = 2  # fewer texts of a class give no AUROC worth a number


@dataclass
class LabelledSet:
    """One labelled set: its ``name``, texts and labels (``True``: positive)."""

    name: str
    texts: list[str]
    labels: list[bool]

    @property
    def n_pos(self) -> int:
        return sum(self.labels)

    @property
    def n_neg(self) -> int:
        return len(self.labels) - self.n_pos


def check_classes(name: str, n_pos: int, n_neg: int, *, minimum: int = MIN_PER_CLASS) -> None:
    """A one-line :class:`SteerError` unless the set ``name`` has ``minimum`` texts of each
    class."""
    for what, n in (("positive", n_pos), ("negative", n_neg)):
        if n == 0:
            raise SteerError(f"has no {what} texts (label 1 and 0 are both needed)", where=name)
        if n < minimum:
            raise SteerError(
                f"has {n} {what} text{'s' if n != 1 else ''}; at least {minimum} are needed",
                where=name,
            )


def _label(value: Any, where: str) -> bool:
    # Exactly 0/1 or false/true: "label": "hate" or 0.7 is a mistake, not a class.
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise SteerError(f"label must be 0, 1, true or false (got {value!r})", where=where)


def read_labelled(path: str | Path, *, name: str | None = None) -> LabelledSet:
    """Read a labelled JSON-lines file (``text`` and ``label`` per record); every problem
    (missing file, bad JSON, a record without text, an unknown label, a class with fewer than
    two texts) is a one-line :class:`SteerError` naming the file and line."""
    path = Path(path)
    name = name or path.stem
    if path.is_dir():
        raise SteerError("is a folder, where a labelled .jsonl file is needed", where=str(path))
    if not path.is_file():
        raise SteerError("labelled file not found", where=str(path))
    texts, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerError(f"cannot read it ({type(exc).__name__})", where=str(path)) from None
    for where, rec in json_lines(path, lines):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise SteerError('each record needs a "text" string', where=where)
        if "label" not in rec:
            raise SteerError('each record needs a "label" (0 or 1)', where=where)
        texts.append(rec["text"])
        labels.append(_label(rec["label"], where))
    out = LabelledSet(name=name, texts=texts, labels=labels)
    check_classes(str(path), out.n_pos, out.n_neg)
    return out


def labelled_from_texts(name: str, pos: str | Path, neg: str | Path) -> LabelledSet:
    """A labelled set from two plain-text files, one text per line (or ``builtin:NAME``
    shipped texts): ``pos`` labelled 1, ``neg`` 0. A problem is a one-line
    :class:`SteerError` naming the file."""
    from steer.corpus.shipped import resolve_text_path
    from steer.corpus.texts import read_texts

    texts: dict[bool, list[str]] = {}
    for label, value in ((True, pos), (False, neg)):
        path = resolve_text_path(str(value))
        if path.suffix in (".json", ".jsonl"):
            raise SteerError(
                "POS,NEG take plain text files, one text per line (a JSONL set is one file "
                "with text and label per record)",
                where=str(path),
            )
        texts[label] = read_texts(path, None)
    out = LabelledSet(
        name=name,
        texts=texts[True] + texts[False],
        labels=[True] * len(texts[True]) + [False] * len(texts[False]),
    )
    check_classes(name, out.n_pos, out.n_neg)
    return out


@dataclass
class EncodedSet:
    """What the detectors read of one labelled set (see the module docstring).

    ``tok_ptr`` ``[n + 1]``: text ``i``'s kept tokens are rows ``tok_ptr[i]:tok_ptr[i + 1]``
    of the token table; ``tok_row`` ``[nnz]`` names each non-zero activation's token row,
    ``tok_idx`` its feature, ``tok_val`` its value.
    """

    labels: torch.Tensor  # [n] bool
    sae_max: torch.Tensor  # [n, d_sae]
    resid_mean: torch.Tensor  # [n, d_model]
    tok_ptr: torch.Tensor
    tok_row: torch.Tensor
    tok_idx: torch.Tensor
    tok_val: torch.Tensor

    def subset(self, mask: torch.Tensor) -> EncodedSet:
        """The texts where ``mask`` is true (token tables rebuilt to match)."""
        keep = torch.nonzero(mask).flatten()
        # tok_row never decreases (texts are stored in order), so each text's entries are one
        # slice of the entry tables: find the slices once instead of scanning per text.
        entry = torch.searchsorted(self.tok_row, self.tok_ptr)
        ptr, rows, idx, val = [0], [], [], []
        for i in keep.tolist():
            a, b = int(self.tok_ptr[i]), int(self.tok_ptr[i + 1])
            e0, e1 = int(entry[i]), int(entry[i + 1])
            rows.append(self.tok_row[e0:e1] - a + ptr[-1])
            idx.append(self.tok_idx[e0:e1])
            val.append(self.tok_val[e0:e1])
            ptr.append(ptr[-1] + b - a)
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        return EncodedSet(
            labels=self.labels[keep],
            sae_max=self.sae_max[keep],
            resid_mean=self.resid_mean[keep],
            tok_ptr=torch.tensor(ptr, dtype=torch.long),
            tok_row=cat(rows, torch.long),
            tok_idx=cat(idx, torch.long),
            tok_val=cat(val, torch.float32),
        )

    def token_scores(self, weight: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
        """Each text's max over its kept tokens of ``acts @ weight + bias`` (``weight``
        ``[d_sae]``): the score of a linear per-token monitor; ``bias`` for a text with no
        kept token."""
        n_rows = int(self.tok_ptr[-1])
        per_token = torch.full((n_rows,), float(bias))
        per_token.index_add_(0, self.tok_row, self.tok_val * weight[self.tok_idx])
        out = torch.full((len(self.labels),), float(bias))
        for i in range(len(self.labels)):
            a, b = int(self.tok_ptr[i]), int(self.tok_ptr[i + 1])
            if b > a:
                out[i] = per_token[a:b].max()
        return out


class _KeepHidden(BatchEncoder):
    """A BatchEncoder that remembers the batch's residual stream, so the residual pooling
    reads the same pass as the SAE features."""

    def hidden_and_keep(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = super().hidden_and_keep(ids)
        return self.last


def encode_labelled(
    model: Any,
    sae: Any,
    texts: Sequence[str],
    labels: Sequence[bool],
    *,
    ctx_len: int = 128,
    batch: int = 8,
    progress: bool = True,
    desc: str = "encoding",
) -> EncodedSet:
    """One pass over ``texts`` (see the module docstring); a text with no kept position has
    zero pooled rows and no tokens."""
    from tqdm.auto import tqdm

    from steer.features.encode import encode_texts

    enc_ = _KeepHidden(model, sae)
    n = len(texts)
    sae_max = torch.zeros(n, int(sae.cfg.d_sae))
    resid = torch.zeros(n, int(model.d_model))
    ptr, rows, idx, val = [0], [], [], []
    bar = tqdm(total=n, desc=desc, unit="text", disable=not progress, leave=False)
    with bar:
        for enc in encode_texts(model, sae, texts, ctx_len=ctx_len, batch=batch, encoder=enc_):
            kept = enc.acts[enc.keep]
            if len(kept):
                sae_max[enc.index] = kept.max(dim=0).values
                hidden, keep = enc_.last
                row = enc.index % batch
                h = hidden[row, : len(enc.keep)][keep[row, : len(enc.keep)]]
                resid[enc.index] = h.float().mean(dim=0)
                t, f = torch.nonzero(kept, as_tuple=True)
                rows.append(t + ptr[-1])
                idx.append(f)
                val.append(kept[t, f])
            ptr.append(ptr[-1] + len(kept))
            bar.update(1)
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
    return EncodedSet(
        labels=torch.tensor(list(labels), dtype=torch.bool),
        sae_max=sae_max,
        resid_mean=resid,
        tok_ptr=torch.tensor(ptr, dtype=torch.long),
        tok_row=cat(rows, torch.long),
        tok_idx=cat(idx, torch.long),
        tok_val=cat(val, torch.float32),
    )


def join_sites(sets: Sequence[EncodedSet]) -> EncodedSet:
    """One set whose pooled rows read several SAEs (or layers) at once: the same texts
    encoded at each site, ``sae_max`` and ``resid_mean`` side by side in the order given
    (feature ``f`` of the second site is column ``d_sae_0 + f``). The token tables are left
    empty: each site keeps its own positions (the outlier rule reads that site's norms), so
    a per-token score across sites has no common token to read; only the pooled detector
    kinds (group, consistent, sparse, dense) apply to the result."""
    if not sets:
        raise SteerError("joining sites needs at least one encoded set")
    first = sets[0]
    for i, other in enumerate(sets[1:], start=1):
        if not torch.equal(other.labels, first.labels):
            raise SteerError(
                f"encoded set {i} holds other texts than set 0 ({len(other.labels)} labels "
                f"against {len(first.labels)}, or in another order): join encodings of one file"
            )
    n = len(first.labels)
    return EncodedSet(
        labels=first.labels.clone(),
        sae_max=torch.cat([s.sae_max for s in sets], dim=1),
        resid_mean=torch.cat([s.resid_mean for s in sets], dim=1),
        tok_ptr=torch.zeros(n + 1, dtype=torch.long),
        tok_row=torch.zeros(0, dtype=torch.long),
        tok_idx=torch.zeros(0, dtype=torch.long),
        tok_val=torch.zeros(0, dtype=torch.float32),
    )
