"""SAE feature activations of texts, position by position, the way training saw them.

The model runs up to the SAE's layer (nnsight, stopped early, under ``inference_mode``; see
:func:`steer.model.trace.layer_output`). Positions training left out -- special tokens,
position 0 of each sequence (the attention sink) and norm outliers -- are not encoded: their
activations are all zero and ``keep`` is false there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steer.model.positions import CollectStats, OutlierFilter, keep_mask, special_token_ids
from steer.model.sites import Hook, hook_of
from steer.model.trace import site_output


@dataclass
class EncodedText:
    """One text's tokens and feature activations.

    ``token_ids`` ``[T]``, ``acts`` ``[T, d_sae]`` (or ``[T, len(features)]``; zero where
    ``keep`` is false), ``keep`` ``[T]`` bool. ``index`` is the text's position in the input
    sequence.
    """

    index: int
    token_ids: torch.Tensor
    acts: torch.Tensor
    keep: torch.Tensor


class BatchEncoder:
    """Encodes batches of token ids ``[B, T]`` with ``sae`` at its layer of ``model``.

    Holds the running outlier filter (and optional stats), so a stream of batches is filtered
    exactly as training filtered its stream.
    """

    def __init__(
        self,
        model: Any,
        sae: Any,
        *,
        outlier_factor: float = 10.0,
        features: Sequence[int] | None = None,
        hook: Hook | None = None,
    ):
        self.model = model
        self.sae = sae
        # The site read: ``hook`` (a recipe's), else the SAE's own; residual SAEs read the
        # stream after block ``layer`` exactly as before.
        self.hook = hook or hook_of(sae.cfg.hook_name, sae.cfg.hf_hook_name)
        if self.hook is None or self.hook.kind in ("resid_pre", "resid_post"):
            self.hook = Hook.at("resid_post", int(sae.cfg.layer))
        self.layer = self.hook.layer
        self.special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
        self.outliers = OutlierFilter(outlier_factor)
        self.stats = CollectStats()
        # ``features``: encode only these columns (SAE.encode_features), e.g. for a monitor
        # that watches a few features; the output's last axis then follows this order.
        self.features = None if features is None else torch.tensor(list(features), dtype=torch.long)
        self.width = int(sae.cfg.d_sae) if features is None else len(self.features)

    def hidden_and_keep(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden [B, T, d_model] float32, keep [B, T] bool)``: the residual stream at the
        SAE's layer and which positions training would have kept (updates the outlier filter)."""
        ids = ids.long()
        hidden = self.hidden(ids)
        return hidden, self.keep(ids, hidden)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The residual stream ``[B, T, d_model]`` at the SAE's site (the forward pass alone)."""
        return site_output(self.model, self.hook, ids.long())

    def keep(self, ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Which positions of ``ids`` training would have kept, given their ``hidden`` states
        (updates the outlier filter and the stats)."""
        return keep_mask(ids.long(), hidden, self.special, self.outliers, self.stats)

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(acts [B, T, width] float32, keep [B, T] bool)`` for token ids ``[B, T]``;
        ``width`` is ``d_sae``, or the number of ``features`` asked for."""
        hidden, keep = self.hidden_and_keep(ids)
        return self.encode_kept(hidden, keep), keep

    def encode_kept(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``acts [B, T, width]``: the encoding of ``hidden`` where ``keep``, zero elsewhere."""
        acts = torch.zeros(*keep.shape, self.width, dtype=torch.float32)
        if keep.any():
            x = hidden[keep].to(self.sae.device)
            with torch.inference_mode():
                if self.features is None:
                    out = self.sae.encode(x)
                else:
                    out = self.sae.encode_features(x, self.features)
            acts[keep] = out.float().cpu()
        return acts


def encode_texts(
    model: Any,
    sae: Any,
    texts: Sequence[str],
    *,
    ctx_len: int = 128,
    batch: int = 8,
    encoder: BatchEncoder | None = None,
    features: Sequence[int] | None = None,
    hook: Hook | None = None,
) -> Iterator[EncodedText]:
    """Yield an :class:`EncodedText` per text, in order.

    Each text is tokenized on its own (no special tokens added) and cut to its first
    ``ctx_len`` tokens; ``batch`` texts go through the model at once, right-padded (the model
    is causal, so padding after a text cannot change it). Empty texts give ``T == 0``.
    ``features`` (when no ``encoder`` is given): encode only these features, so ``acts`` is
    ``[T, len(features)]`` in that order; ``hook``: the site to read (default: the SAE's).
    An ``encoder`` sets both itself.
    """
    tok = model.tokenizer
    encoder = encoder or BatchEncoder(model, sae, features=features, hook=hook)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for b0 in range(0, len(texts), batch):
        chunk = list(texts[b0 : b0 + batch])
        token_lists = [ids[:ctx_len] for ids in tok(chunk, add_special_tokens=False)["input_ids"]]
        width = max((len(ids) for ids in token_lists), default=0)
        if width == 0:
            acts = torch.zeros(len(chunk), 0, encoder.width)
            keep = torch.zeros(len(chunk), 0, dtype=torch.bool)
        else:
            ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
            for row, toks in enumerate(token_lists):
                ids[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            acts, keep = encoder(ids)
        for row, toks in enumerate(token_lists):
            n = len(toks)
            yield EncodedText(
                index=b0 + row,
                token_ids=torch.tensor(toks, dtype=torch.long),
                acts=acts[row, :n],
                keep=keep[row, :n],
            )


def pool_texts(
    model: Any,
    sae: Any,
    texts: Sequence[str],
    *,
    pools: Sequence[str] = ("max",),
    encoder: BatchEncoder | None = None,
    ctx_len: int = 128,
    batch: int = 8,
    progress: bool = True,
    desc: str = "encoding",
) -> dict[str, torch.Tensor]:
    """Each text's encoding pooled over its kept positions, ``{pool: [len(texts), width]}``
    for each of ``pools`` (``"max"``, ``"mean"``); zeros for a text with no kept position.

    The encoding is the SAE's features (``[..., d_sae]``), or whatever ``encoder`` gives.
    """
    from tqdm.auto import tqdm

    unknown = set(pools) - {"max", "mean"}
    if unknown:
        raise ValueError(f"unknown pooling {sorted(unknown)} (known: max, mean)")
    encoder = encoder or BatchEncoder(model, sae)
    out = {pool: torch.zeros(len(texts), encoder.width) for pool in pools}
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False)
    with bar:
        for enc in encode_texts(model, sae, texts, ctx_len=ctx_len, batch=batch, encoder=encoder):
            if enc.keep.any():
                kept = enc.acts[enc.keep]
                if "max" in out:
                    out["max"][enc.index] = kept.max(dim=0).values
                if "mean" in out:
                    out["mean"][enc.index] = kept.mean(dim=0)
            bar.update(1)
    return out
