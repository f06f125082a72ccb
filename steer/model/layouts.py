"""Which module of each model family computes each site (:mod:`steer.model.sites`): one table,
read by the nnsight adapter (:mod:`steer.model.trace`).

For each family: which module's output is exactly what the attention
adds to the residual stream (Gemma's post-attention norm, Phi-3's and GPT-NeoX's dropouts:
what is added, after the family's own extra steps), the same for the MLP, and the module whose
input is the attention heads' concatenated outputs (``z``). A block's input is ``resid_pre``,
its output ``resid_post``; ``resid_mid`` is ``resid_pre + attn_out`` where the MLP reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from steer.errors import SteerError
from steer.model.sites import Hook


@dataclass(frozen=True)
class Layout:
    """Module paths, relative to a block, of one model family. (The blocks themselves are
    found through the nnsight adapter's ``rename=`` aliases, :data:`steer.model.trace.ALIASES`.)"""

    attn_out: str
    mlp_out: str
    z: str
    mlp: str = "mlp"  # the MLP itself: its input is mlp_in
    # GPT-NeoX's parallel blocks feed attention and MLP the same input: no resid_mid.
    has_mid: bool = True


_LLAMA = Layout(attn_out="self_attn", mlp_out="mlp", z="self_attn.o_proj")
_GEMMA = Layout(
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    z="self_attn.o_proj",
)

# config.model_type -> layout. Llama's layout serves every family built like it.
LAYOUTS: dict[str, Layout] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "gemma3": _GEMMA,
    "phi3": Layout(
        attn_out="resid_attn_dropout",
        mlp_out="resid_mlp_dropout",
        z="self_attn.o_proj",
    ),
    "gpt2": Layout(attn_out="attn", mlp_out="mlp", z="attn.c_proj"),
    "gpt_neox": Layout(
        attn_out="post_attention_dropout",
        mlp_out="post_mlp_dropout",
        z="attention.dense",
    ),
}
FAMILIES = tuple(LAYOUTS)


def layout_of(config) -> Layout:
    """The layout of a model with this HF ``config``; a family steer has no table for is a
    one-line SteerError naming the ones it has."""
    model_type = getattr(config, "model_type", None)
    layout = LAYOUTS.get(model_type)
    if layout is None:
        raise SteerError(
            f"steer has no site table for model type {model_type!r} (it knows: "
            f"{', '.join(sorted(set(LAYOUTS)))}); only the residual stream after a block works"
        )
    if model_type == "gpt_neox" and getattr(config, "use_parallel_residual", True):
        return dataclasses.replace(layout, has_mid=False)
    return layout


def check_site(config, hook: Hook) -> None:
    """A one-line SteerError if this model has no such site (a block out of range, resid_mid
    in a parallel block)."""
    n_layers = int(config.num_hidden_layers)
    if not 0 <= hook.layer < n_layers:
        raise SteerError(
            f"the SAE's layer {hook.layer} is out of range (the model has {n_layers} layers)"
        )
    if hook.kind == "resid_post":
        return  # every family: a block's output
    layout = layout_of(config)
    if hook.kind == "resid_mid" and not layout.has_mid:
        raise SteerError(
            f"{getattr(config, 'model_type', 'this model')} blocks run attention and MLP in "
            "parallel: there is no resid_mid site"
        )


def site_width(config, hook: Hook) -> int:
    """The width of the vector at ``hook``: the hidden size, or for ``z`` the heads'
    concatenated width."""
    if hook.kind != "z":
        return int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 0) or config.n_head)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return heads * int(head_dim)
