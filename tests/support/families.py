"""Tiny random-weight models of every family steer has a site table for, built from the real
Hugging Face config and model classes (no download, a fraction of a second each).

Each keeps what sets its family apart: Gemma's embedding scaling, sandwich norms and
soft-capping (Gemma 2's final and attention logit caps), Gemma 3's and Qwen 3's query/key
norms, Phi-3's fused projections and residual dropouts, GPT-2's Conv1D layers and absolute
positions, GPT-NeoX's parallel residual (and ``gpt_neox_sequential``, the sequential one).
Gemma and Qwen 3 have heads wider than the hidden size over their count (``z`` is 64 wide
where the residual stream is 32), as the real Gemma models do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from steer.model import LoadedModel

HIDDEN = 32
LAYERS = 3
# The tiny tokenizer's specials: <|im_start|> is 1, <|im_end|> 2.
_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
# Llama-like families: 4 query heads of 8, 2 key/value heads.
_DECODER = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    **_IDS,
}
# Heads of 16: 4 x 16 = 64 != 32 (Gemma 2 2B: 8 x 256 = 2048 != 2304).
_WIDE_HEADS = {"head_dim": 16}
_GEMMA = {**_DECODER, **_WIDE_HEADS, "query_pre_attn_scalar": 16, "sliding_window": 6}

# family -> (config class, model class, config kwargs); classes by name in `transformers`.
_FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _DECODER),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**_DECODER, "sliding_window": 64}),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**_GEMMA, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**_GEMMA, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
    ),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _DECODER),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**_DECODER, **_WIDE_HEADS}),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        {**_DECODER, "original_max_position_embeddings": 128},
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": 4, "n_positions": 128, **_IDS},
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 4,
            "intermediate_size": 2 * HIDDEN,
            "max_position_embeddings": 128,
            **_IDS,
        },
    ),
}
_FAMILIES["gpt_neox_sequential"] = (
    *_FAMILIES["gpt_neox"][:2],
    {**_FAMILIES["gpt_neox"][2], "use_parallel_residual": False},
)
FAMILIES = tuple(_FAMILIES)

_LLAMA_PATHS = {
    "blocks": "model.layers",
    "attn": "self_attn",
    "mlp": "mlp",
    "z": "self_attn.o_proj",
    "mlp_module": "mlp",  # the MLP itself (input: mlp_in)
}
_GEMMA_PATHS = {
    **_LLAMA_PATHS,
    "attn": "post_attention_layernorm",
    "mlp": "post_feedforward_layernorm",
}
_NEOX_PATHS = {
    "blocks": "gpt_neox.layers",
    "attn": "post_attention_dropout",
    "mlp": "post_mlp_dropout",
    "z": "attention.dense",
    "mlp_module": "mlp",
}
# family -> its HF module paths (relative to a block, but `blocks`), written out here rather
# than read from steer's table: what the attention and the MLP add to the residual stream
# (outputs: attn_out, mlp_out), the heads' output projection (input: z), the norm before the
# MLP (input: resid_mid; None: the family has no such site).
MODULES = {
    "llama": {**_LLAMA_PATHS, "mid": "post_attention_layernorm"},
    "mistral": {**_LLAMA_PATHS, "mid": "post_attention_layernorm"},
    "qwen2": {**_LLAMA_PATHS, "mid": "post_attention_layernorm"},
    "qwen3": {**_LLAMA_PATHS, "mid": "post_attention_layernorm"},
    "gemma2": {**_GEMMA_PATHS, "mid": "pre_feedforward_layernorm"},
    "gemma3": {**_GEMMA_PATHS, "mid": "pre_feedforward_layernorm"},
    "phi3": {
        **_LLAMA_PATHS,
        "attn": "resid_attn_dropout",
        "mlp": "resid_mlp_dropout",
        "mid": "post_attention_layernorm",
    },
    "gpt2": {
        "blocks": "transformer.h",
        "attn": "attn",
        "mlp": "mlp",
        "z": "attn.c_proj",
        "mid": "ln_2",
        "mlp_module": "mlp",
    },
    "gpt_neox": {**_NEOX_PATHS, "mid": None},
    "gpt_neox_sequential": {**_NEOX_PATHS, "mid": "post_attention_layernorm"},
}
assert set(MODULES) == set(FAMILIES)


def tiny_family(name: str, *, seed: int = 0) -> LoadedModel:
    """A tiny random-weight model of family ``name`` (one of :data:`FAMILIES`) with the tiny
    tokenizer, named ``tiny-<name>``."""
    import transformers

    from support.tiny import tiny_tokenizer

    config_class, model_class, kwargs = _FAMILIES[name]
    tok = tiny_tokenizer()
    config = getattr(transformers, config_class)(vocab_size=len(tok), **kwargs)
    torch.manual_seed(seed)
    hf = getattr(transformers, model_class)(config).eval()
    # Larger random weights than the init default (as the tiny Llama has), so that greedy
    # decoding does not collapse to one repeated token and edits visibly change the output.
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return LoadedModel(name=f"tiny-{name}", hf=hf, tokenizer=tok)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the duration. Tiny models gain nothing from more, and
    where another process keeps a core busy, torch's OpenMP threads wait for each other at
    every operator: a tiny model's generate then takes seconds instead of milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
