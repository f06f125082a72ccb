"""Where in a model an SAE reads and writes: a :class:`Hook` is a site kind at a block.

Site kinds, in the order a block computes them:

* ``resid_pre``: the residual stream entering block N (the embeddings for N = 0);
* ``z``: the attention heads' outputs, concatenated, before the output projection
  (SAELens/TransformerLens ``attn.hook_z`` with ``reshape_activations: hook_z``);
* ``attn_out``: what the attention adds to the residual stream;
* ``resid_mid``: the residual stream between attention and MLP (models whose MLP reads the
  attention's result; not GPT-NeoX's parallel blocks);
* ``mlp_in``: what the MLP reads, after its norm (TransformerLens ``hook_mlp_in`` and
  ``ln2.hook_normalized``: where transcoders read);
* ``mlp_out``: what the MLP adds to the residual stream;
* ``resid_post``: the residual stream leaving block N.

Names are read the way SAEs spell them: TransformerLens/SAELens hook names
(``blocks.8.hook_mlp_out``, ``blocks.3.attn.hook_z``) and Hugging Face module paths
(``model.layers.8.mlp``, ``transformer.h.3.attn``). No torch here: ``steer check`` reads
them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SITE_KINDS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")

# TransformerLens hook name of each kind at block N.
_TL_NAMES = {
    "resid_pre": "blocks.{n}.hook_resid_pre",
    "z": "blocks.{n}.attn.hook_z",
    "attn_out": "blocks.{n}.hook_attn_out",
    "resid_mid": "blocks.{n}.hook_resid_mid",
    "mlp_in": "blocks.{n}.hook_mlp_in",
    "mlp_out": "blocks.{n}.hook_mlp_out",
    "resid_post": "blocks.{n}.hook_resid_post",
}
_TL = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out"
    r"|hook_mlp_out|hook_mlp_in|ln2\.hook_normalized|attn\.hook_z)$"
)
_TL_KIND = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "hook_mlp_in": "mlp_in",
    "ln2.hook_normalized": "mlp_in",
    "attn.hook_z": "z",
}
# Hugging Face module paths: <...>.layers.N / <...>.h.N [.<module>][.input] (model.layers,
# transformer.h, gpt_neox.layers, a wrapper's prefix...). Only
# paths whose meaning is the same in every family are read: Llama's post_attention_layernorm
# is the norm before the MLP, Gemma's the one after attention, so that name is not guessed.
_HF = re.compile(r"^(?:[\w.]*\.)?(?:layers|h)\.(\d+)(?:\.([a-z_]+(?:\.[a-z_]+)?))?$")
# A module's output...
_HF_OUTPUT = {
    None: "resid_post",
    "mlp": "mlp_out",
    "post_feedforward_layernorm": "mlp_out",
    "post_mlp_dropout": "mlp_out",
    "resid_mlp_dropout": "mlp_out",
    "self_attn": "attn_out",
    "attn": "attn_out",
    "attention": "attn_out",
    "post_attention_dropout": "attn_out",
    "resid_attn_dropout": "attn_out",
}
# ... and a module's input (``.input``, as Gemma Scope 2 writes).
_HF_INPUT = {
    None: "resid_pre",
    "mlp": "mlp_in",
    "self_attn.o_proj": "z",
    "attn.c_proj": "z",
    "attention.dense": "z",
}


@dataclass(frozen=True, order=True)
class Hook:
    """A site kind at block ``layer``; hooks sort in the order a forward pass meets them."""

    layer: int
    rank: int = field(repr=False)
    kind: str

    @classmethod
    def at(cls, kind: str, layer: int) -> Hook:
        """The hook of ``kind`` (one of :data:`SITE_KINDS`) at block ``layer``."""
        if kind not in SITE_KINDS:
            raise ValueError(f"unknown site {kind!r} (known: {', '.join(SITE_KINDS)})")
        return cls(layer=layer, rank=SITE_KINDS.index(kind), kind=kind)

    @property
    def name(self) -> str:
        """The TransformerLens name: ``blocks.8.hook_mlp_out``."""
        return _TL_NAMES[self.kind].format(n=self.layer)

    @property
    def is_residual(self) -> bool:
        """Whether the site is the residual stream itself (not a contribution to it)."""
        return self.kind.startswith("resid_")

    def __str__(self) -> str:
        return f"{self.kind} of block {self.layer}"


def hook_of(hook_name: str | None, hf_hook_name: str | None = None) -> Hook | None:
    """The hook an SAE's names give (the TransformerLens name first, else the HF path), or
    ``None`` when neither names a site steer knows. ``.input`` on an HF path (``...o_proj
    .input``, as Gemma Scope 2 writes) means the module's input."""
    if hook_name and (m := _TL.match(hook_name)):
        return Hook.at(_TL_KIND[m.group(2)], int(m.group(1)))
    if hf_hook_name:
        path = hf_hook_name.removesuffix(".input")
        table = _HF_INPUT if path != hf_hook_name else _HF_OUTPUT
        if (m := _HF.match(path)) and m.group(2) in table:
            return Hook.at(table[m.group(2)], int(m.group(1)))
    return None
