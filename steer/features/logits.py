"""The output tokens of each feature: what its decoder direction promotes and suppresses.

Read straight from the weights (no corpus): the decoder direction, through the final norm's
weight and the unembedding, ranks the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steer.model.trace import final_norm_weight

N_LOGITS = 10


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
