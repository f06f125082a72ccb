"""Nodes to pinpoint at one layer, and the prompts' clean activations there.

A *basis* says how the residual stream ``h`` at a layer splits into nodes: the SAE's features
(``a = encode(h)``, directions ``W_dec``, plus the SAE error ``h - decode(a)`` as one more node),
or the residual stream's own basis directions ("neurons": ``a = h``, directions ``I``). Every
edit of nodes is written as ``h + (a_new - a) @ D``: only the change is decoded, so the error
term stays untouched, exactly as the steering engine edits features.

Prompts are grouped into *buckets* of equal token length, so no padding (and no attention
mask) is needed and the last position is the same for every row. Nodes are only edited at kept
positions (:func:`steer.model.positions.keep_mask`): never position 0 (the attention sink, norm
~30,000 on SmolLM2), special tokens or norm outliers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from steer.errors import SteerError
from steer.model.positions import OutlierFilter, keep_mask, special_token_ids


@dataclass
class Bucket:
    """Prompts of one token length: ``ids`` ``[B, T]`` and their indices in the recipe."""

    ids: torch.Tensor
    rows: list[int]
    cf_ids: torch.Tensor | None = None


def make_buckets(
    model: Any,
    prompts: list[str],
    counterfactuals: list[str] | None,
    *,
    chat: bool,
    batch_size: int,
) -> list[Bucket]:
    """Tokenize prompts (and counterfactuals, which must match their prompt's token count) and
    group them by length, at most ``batch_size`` per bucket."""
    tok = model.tokenizer

    def encode(text: str) -> list[int]:
        formatted = model.format_prompt(text, chat)
        # A chat template already holds its special tokens; do not add a second BOS.
        return tok(formatted, add_special_tokens=not chat)["input_ids"]

    by_len: dict[int, list[tuple[int, list[int], list[int] | None]]] = defaultdict(list)
    for i, text in enumerate(prompts):
        ids = encode(text)
        cf = None
        if counterfactuals is not None:
            cf = encode(counterfactuals[i])
            if len(cf) != len(ids):
                raise SteerError(
                    f"counterfactuals[{i}] is {len(cf)} tokens but prompts[{i}] is {len(ids)}; "
                    "counterfactual patching needs equal token counts"
                )
        if len(ids) < 2:
            raise SteerError(f"prompts[{i}] is a single token; nothing before it can be edited")
        by_len[len(ids)].append((i, ids, cf))
    buckets = []
    for length in sorted(by_len):
        group = by_len[length]
        for b0 in range(0, len(group), batch_size):
            part = group[b0 : b0 + batch_size]
            buckets.append(
                Bucket(
                    ids=torch.tensor([p[1] for p in part], dtype=torch.long),
                    rows=[p[0] for p in part],
                    cf_ids=None if counterfactuals is None else torch.tensor([p[2] for p in part]),
                )
            )
    return buckets


class Basis:
    """How the residual stream splits into nodes. Subclasses: :class:`FeatureBasis`,
    :class:`NeuronBasis`, :class:`LinearBasis`."""

    kind: str
    has_error: bool

    @property
    def n(self) -> int:
        return int(self.directions.shape[0])

    directions: torch.Tensor  # [n, d]

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """Node activations ``[..., n]`` of residual vectors ``[..., d]``."""
        raise NotImplementedError

    def error(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor | None:
        """What the nodes leave out of ``h`` (the SAE error), or ``None``."""
        return None


class FeatureBasis(Basis):
    """The features of an SAE, with its reconstruction error as an extra node."""

    kind = "features"
    has_error = True

    def __init__(self, sae: Any):
        if sae.needs_input_to_decode:
            # Attribution sums activation x direction; a per-token rescale breaks that sum.
            raise SteerError(
                f"pinpoint needs an SAE that writes fixed directions; this one normalises each "
                f"token (normalize_activations={sae.cfg.normalize_activations!r}, "
                f"centred={sae.cfg.centered_input})"
            )
        self.sae = sae
        self.directions = sae.W_dec.detach().float()

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.sae.encode(h).float()

    def error(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return h - self.sae.decode(a).float()


class NeuronBasis(Basis):
    """The residual stream's basis directions: node ``i`` is dimension ``i`` of ``h``."""

    kind = "neurons"
    has_error = False

    def __init__(self, d_model: int):
        self.directions = torch.eye(d_model)

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return h.float()


class LinearBasis(Basis):
    """Directions fitted to the residual stream, the seed paper's other baselines: ``pca``
    (principal components) or ``ica`` (independent components). Node ``i`` is coordinate ``i``
    of ``h - mean`` (``a = (h - mean) @ encoder.T``), its direction row ``i`` of ``directions``
    (``h = mean + a @ directions + error``); what the ``k`` directions leave out is the error
    node, as an SAE's reconstruction error is."""

    has_error = True

    def __init__(
        self, kind: str, encoder: torch.Tensor, directions: torch.Tensor, mean: torch.Tensor
    ):
        self.kind = kind
        self.encoder = encoder.float()
        self.directions = directions.float()
        self.mean = mean.float()

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return (h.float() - self.mean) @ self.encoder.T

    def error(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return h.float() - self.mean - a @ self.directions


@dataclass
class LayerRun:
    """Clean residual stream at one layer for every bucket: ``hidden`` ``[B, T, d]``, which
    positions may be edited, and (with counterfactuals) the counterfactual hidden states."""

    layer: int
    hidden: list[torch.Tensor]
    mask: list[torch.Tensor]
    cf_hidden: list[torch.Tensor] | None
    logits: list[torch.Tensor]


@dataclass
class NodeSet:
    """One basis at one layer, ready to attribute and ablate.

    ``acts[b]`` ``[B, T, n]`` are the clean activations of bucket ``b``; ``delta[b]`` is
    ``target - acts`` at kept positions and 0 elsewhere (``target``: 0, the prompts' mean, or
    the counterfactual's activations). ``err_delta[b]`` is the same for the error node.
    """

    basis: Basis
    run: LayerRun
    acts: list[torch.Tensor]
    delta: list[torch.Tensor]
    err_delta: list[torch.Tensor] | None
    target_mean: torch.Tensor | None  # [n] the mean-ablation value, if mean ablation

    def edited_hidden(self, b: int, offsets: torch.Tensor, err_offset: torch.Tensor | None = None):
        """``h + offsets @ D (+ err_offset)`` for bucket ``b``; ``offsets`` ``[B, T, n]``."""
        out = self.run.hidden[b] + offsets @ self.basis.directions
        return out if err_offset is None else out + err_offset


def clean_layer_run(
    model: Any, layer: int, buckets: list[Bucket], *, outlier_factor=10.0
) -> LayerRun:
    """Clean forward of every bucket (and its counterfactual), with the kept-position masks."""
    from steer.model.trace import clean_run

    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers = OutlierFilter(outlier_factor)
    hidden, masks, logits, cf_hidden = [], [], [], []
    for bucket in buckets:
        h, lg = clean_run(model, layer, bucket.ids)
        mask = keep_mask(bucket.ids, h, special, outliers)
        if bucket.cf_ids is not None:
            h_cf, _ = clean_run(model, layer, bucket.cf_ids)
            mask = mask & keep_mask(bucket.cf_ids, h_cf, special, outliers)
            cf_hidden.append(h_cf)
        hidden.append(h)
        masks.append(mask)
        logits.append(lg)
    if not any(m.any() for m in masks):
        raise SteerError("no prompt position can be edited (all are special, first or outliers)")
    has_cf = buckets[0].cf_ids is not None
    return LayerRun(layer, hidden, masks, cf_hidden if has_cf else None, logits)


def build_nodes(basis: Basis, run: LayerRun, ablation: str) -> NodeSet:
    """Clean activations and ablation deltas of ``basis`` on ``run``'s prompts."""
    acts = [basis.encode(h) for h in run.hidden]
    errs = [basis.error(h, a) for h, a in zip(run.hidden, acts, strict=True)]
    target_mean = None
    if run.cf_hidden is not None:
        cf_acts = [basis.encode(h) for h in run.cf_hidden]
        targets = cf_acts
        err_targets = [basis.error(h, a) for h, a in zip(run.cf_hidden, cf_acts, strict=True)]
    elif ablation == "mean":
        kept = torch.cat([a[m] for a, m in zip(acts, run.mask, strict=True)])
        target_mean = kept.mean(0)
        targets = [target_mean.expand_as(a) for a in acts]
        err_targets = None
        if basis.has_error:
            kept_err = torch.cat([e[m] for e, m in zip(errs, run.mask, strict=True)])
            err_targets = [kept_err.mean(0).expand_as(e) for e in errs]
    else:
        targets = [torch.zeros_like(a) for a in acts]
        err_targets = [torch.zeros_like(e) for e in errs] if basis.has_error else None
    delta = [(t - a) * m[..., None] for t, a, m in zip(targets, acts, run.mask, strict=True)]
    err_delta = None
    if basis.has_error:
        err_delta = [
            (t - e) * m[..., None] for t, e, m in zip(err_targets, errs, run.mask, strict=True)
        ]
    return NodeSet(basis, run, acts, delta, err_delta, target_mean)
