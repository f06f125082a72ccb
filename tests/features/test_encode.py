"""``encode_texts``: per-token SAE activations of texts, skipping what training skipped, and
the same numbers whatever else shares the batch."""

from __future__ import annotations

import torch
from support.sae_factory import make_sae

from steer.features.encode import encode_texts

TEXTS = [
    "The cat sat on the mat.",
    "Paris is the capital of France. Once upon a time there was a little girl.",
    "",
    "A dog<|im_end|> ran in the park.",
]


def test_batching_and_padding_do_not_change_a_text(tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=32, k=4, layer=2, seed=2)
    together = list(encode_texts(tiny_model, sae, TEXTS, batch=4))
    alone = [next(encode_texts(tiny_model, sae, [t])) for t in TEXTS]
    assert [e.index for e in together] == [0, 1, 2, 3]
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a.token_ids, b.token_ids)
        assert torch.equal(a.keep, b.keep)
        assert torch.allclose(a.acts, b.acts, atol=1e-5)
    assert together[2].acts.shape == (0, 32)


def test_first_position_and_special_tokens_are_not_encoded(tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=32, k=4, layer=2, seed=2)
    enc = next(encode_texts(tiny_model, sae, [TEXTS[3]]))
    special = enc.token_ids == tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert special.sum() == 1
    assert not enc.keep[0] and not enc.keep[special].any()
    assert enc.keep.sum() == len(enc.keep) - 2
    assert (enc.acts[~enc.keep] == 0).all()
    assert ((enc.acts[enc.keep] > 0).sum(1) == 4).all()  # TopK k=4 on every encoded token


def test_texts_are_cut_to_ctx_len(tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=32, k=4, layer=2)
    full = next(encode_texts(tiny_model, sae, [TEXTS[1]]))
    cut = next(encode_texts(tiny_model, sae, [TEXTS[1]], ctx_len=5))
    assert len(cut.token_ids) == 5 and torch.equal(cut.token_ids, full.token_ids[:5])
    assert torch.allclose(cut.acts, full.acts[:5], atol=1e-5)
