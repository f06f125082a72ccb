"""Evaluate an SAE on held-out text: reconstruction quality and what splicing it costs the model.

Metrics (the ones SAE papers report): MSE, explained variance, L0, dead fraction (latents
that never fire on the evaluation tokens), and next-token cross-entropy of the clean model,
the model with the SAE reconstruction spliced in at the layer, and the model with the layer
output zero-ablated; CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean); KL of the
spliced and ablated models to the clean one.

Only kept positions are measured and edited: special tokens, position 0 of each window and
norm outliers (see :mod:`steer.model.positions`) stay clean in every run. Writing a poor
reconstruction over the attention sink (norm ~25,000) would wreck every later position and
measure the sink, not the SAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from steer.corpus.windows import pack_windows
from steer.errors import SteerError
from steer.model.loss import mean_nll
from steer.model.positions import (
    OUTLIER_RULE,
    CollectStats,
    OutlierFilter,
    keep_mask,
    special_token_ids,
)
from steer.model.trace import clean_run, layer_output, patched_logits


def evaluate_sae(
    model: Any,
    sae: Any,
    layer: Any,
    texts: Sequence[str],
    *,
    ctx_len: int = 128,
    max_tokens: int = 50_000,
    ce_tokens: int = 16_384,
    batch_windows: int = 8,
    outlier_factor: float = 10.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``sae`` (``encode``/``decode`` on raw activations) at block ``layer`` (the
    residual stream after it) or at a :class:`~steer.model.sites.Hook`.

    ``texts`` are documents; they are packed into ``ctx_len`` windows and ``max_tokens //
    ctx_len`` windows spread evenly over them are used. The cross-entropy metrics need three
    full forward passes, so they run on an evenly spread subset of ``ce_tokens`` tokens.
    """
    windows = pack_windows(model.tokenizer, list(texts), ctx_len)
    if len(windows) == 0:  # shorter than one window: measured, padded with never-read separators
        windows = pack_windows(model.tokenizer, list(texts), ctx_len, pad_tail=True)
    if len(windows) == 0:
        raise SteerError("the evaluation text is empty")
    n = min(len(windows), max(1, max_tokens // ctx_len))
    windows = windows[torch.linspace(0, len(windows) - 1, n).round().long()].long()
    ce_every = max(1, round(n / max(1, ce_tokens // ctx_len))) if ce_tokens else 0
    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers, stats = OutlierFilter(outlier_factor), CollectStats()
    d_sae = int(sae.W_dec.shape[0])
    fired = torch.zeros(d_sae, dtype=torch.bool)
    keys = ("err2", "x2", "l0", "ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero")
    acc = dict.fromkeys(keys, 0.0)
    sum_x = torch.zeros(int(sae.cfg.d_in), dtype=torch.float64)
    n_tok = n_ce = 0

    bar = tqdm(total=len(windows), desc="eval", unit="win", disable=not progress)
    for b0 in range(0, len(windows), batch_windows):
        ids = windows[b0 : b0 + batch_windows]
        ce_rows = [i for i in range(len(ids)) if ce_every and (b0 + i) % ce_every == 0]
        if ce_rows:
            ce_ids = ids[ce_rows]
            ids = torch.cat([ce_ids, ids[[i for i in range(len(ids)) if i not in ce_rows]]])
            hidden, logits = clean_run(model, layer, ce_ids)
            if len(ce_ids) < len(ids):
                hidden = torch.cat([hidden, layer_output(model, layer, ids[len(ce_ids) :])])
        else:
            hidden = layer_output(model, layer, ids)
        mask = keep_mask(ids, hidden, special, outliers, stats)
        x = hidden[mask]
        with torch.no_grad():
            feats = sae.encode(x)
            recon = sae.decode(feats, like=x).float()
        acc["err2"] += float((recon - x).double().pow(2).sum())
        acc["x2"] += float(x.double().pow(2).sum())
        sum_x += x.double().sum(0)
        active = feats != 0
        acc["l0"] += float(active.sum())
        fired |= active.any(0)
        n_tok += len(x)
        if ce_rows:
            m = mask[: len(ce_rows)]
            spliced, zeroed = hidden[: len(ce_rows)].clone(), hidden[: len(ce_rows)].clone()
            spliced[m] = recon[: int(m.sum())]
            zeroed[m] = 0.0
            sae_logits = patched_logits(model, layer, ce_ids, spliced)
            zero_logits = patched_logits(model, layer, ce_ids, zeroed)
            pos = m[:, :-1]  # predictions made at kept positions
            targets = ce_ids[:, 1:][pos]
            clean_lp = torch.log_softmax(logits[:, :-1][pos], -1)
            n_ce += len(targets)
            acc["ce_clean"] += mean_nll(clean_lp, targets)
            for name, lg in (("sae", sae_logits), ("zero", zero_logits)):
                lp = torch.log_softmax(lg[:, :-1][pos], -1)
                acc[f"ce_{name}"] += mean_nll(lp, targets)
                acc[f"kl_{name}"] += float((clean_lp.exp() * (clean_lp - lp)).sum())
        bar.update(len(ids))
    bar.close()
    return _summary(acc, sum_x, n_tok, n_ce, fired, stats, outlier_factor, model.d_model)


# Evaluation tokens per feature below which the dead fraction comes with a warning.
DEAD_TOKENS_PER_FEATURE = 10


def _summary(acc, sum_x, n_tok, n_ce, fired, stats, factor, d_model) -> dict[str, Any]:
    if n_tok == 0:
        raise SteerError("no evaluation tokens left after dropping special tokens and outliers")
    total_var = acc["x2"] - float(sum_x.pow(2).sum()) / n_tok
    out: dict[str, Any] = {
        "tokens": n_tok,
        "mse": acc["err2"] / (n_tok * d_model),
        "mse_per_token": acc["err2"] / n_tok,
        "explained_variance": 1.0 - acc["err2"] / total_var,
        "l0": acc["l0"] / n_tok,
        "dead_fraction": float((~fired).float().mean()),
    }
    # A feature is "dead" here when it never fired on these tokens: with few tokens per
    # feature, rare features look dead too. Say so rather than report it as a property.
    if n_tok < DEAD_TOKENS_PER_FEATURE * len(fired):
        out["warnings"] = [
            f"dead_fraction is from {n_tok} tokens for {len(fired)} features: features that fire "
            f"less often than once in {n_tok} tokens count as dead (use at least "
            f"{DEAD_TOKENS_PER_FEATURE * len(fired)} tokens for a dead fraction to trust)"
        ]
    if n_ce:
        ce = {k: acc[f"ce_{k}"] / n_ce for k in ("clean", "sae", "zero")}
        gap = ce["zero"] - ce["clean"]
        out.update(
            ce_tokens=n_ce,
            ce_loss_clean=ce["clean"],
            ce_loss_sae=ce["sae"],
            ce_loss_zero_ablation=ce["zero"],
            ce_loss_recovered=(ce["zero"] - ce["sae"]) / gap if gap else float("nan"),
            kl_sae=acc["kl_sae"] / n_ce,
            kl_zero_ablation=acc["kl_zero"] / n_ce,
        )
    out["positions"] = {
        "rule": OUTLIER_RULE.format(factor=factor),
        "spliced": "kept positions only; the others stay clean in every run",
        **{k: getattr(stats, k) for k in ("tokens", "kept", "special", "first_position")},
        "outliers": stats.outliers,
        "max_outlier_norm": stats.max_outlier_norm,
        "median_norm": stats.median_norm,
    }
    return out
