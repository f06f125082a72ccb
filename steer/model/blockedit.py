"""Reading and writing the sites of one transformer block from inside an nnsight trace.

The functions here run in a trace's body: they take the block's envoy (never the model), so a
trace sent to a remote server carries nothing of the model but the envoys nnsight already
knows how to send (:mod:`steer.model.remote`). Opening traces is
:mod:`steer.model.trace`'s job; this module only reads ``.input``/``.output`` of the envoys it
is given, and imports nothing of nnsight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steer.model.sites import Hook


def edit_sites(block: Any, layout: Any, hooks: Sequence[Hook], fn: Any) -> None:
    """Inside a trace: read the sites ``hooks`` of the block envoy ``block`` in forward order
    and write back what ``fn(hook, value)`` returns (nothing when it returns ``value`` itself).

    ``resid_pre`` is the block's input, ``z`` the input of the attention's output projection,
    ``mlp_in`` the MLP's input,
    ``attn_out`` / ``mlp_out`` the output of the module whose result is added to the residual
    stream (:mod:`steer.model.layouts`), ``resid_post`` the block's output. ``resid_mid`` is
    ``resid_pre + attn_out``; a change to it is written by adding it to the attention's
    contribution, so it reaches both the MLP and the residual stream carried past it.
    """
    kinds = {hook.kind: hook for hook in hooks}
    pre = None
    if "resid_pre" in kinds:
        pre = _edit_input(block, lambda v: fn(kinds["resid_pre"], v))
    elif "resid_mid" in kinds:
        pre = block.input
    if "z" in kinds:
        _edit_input(_sub(block, layout.z), lambda v: fn(kinds["z"], v))
    if "attn_out" in kinds or "resid_mid" in kinds:

        def attention(attn: torch.Tensor) -> torch.Tensor:
            new = fn(kinds["attn_out"], attn) if "attn_out" in kinds else attn
            if "resid_mid" in kinds:
                mid = pre + new
                edited = fn(kinds["resid_mid"], mid)
                if edited is not mid:
                    new = new + (edited - mid)
            return new

        _edit_output(_sub(block, layout.attn_out), attention)
    if "mlp_in" in kinds:
        _edit_input(_sub(block, layout.mlp), lambda v: fn(kinds["mlp_in"], v))
    if "mlp_out" in kinds:
        _edit_output(_sub(block, layout.mlp_out), lambda v: fn(kinds["mlp_out"], v))
    if "resid_post" in kinds:
        _edit_output(block, lambda v: fn(kinds["resid_post"], v))


def _sub(block: Any, path: str) -> Any:
    for part in path.split("."):
        block = getattr(block, part)
    return block


def _edit_input(envoy: Any, change: Any) -> torch.Tensor:
    """Replace a module's (first) input by ``change(input)``; returns the input it now gets."""
    value = envoy.input
    new = change(value)
    if new is not value:
        envoy.input = new
    return new


def _edit_output(envoy: Any, change: Any) -> None:
    """Replace a module's output by ``change(output)``; a module that returns a tuple
    (attention: output and weights) has its first element replaced."""
    out = envoy.output
    value = out[0] if isinstance(out, tuple) else out
    new = change(value)
    if new is not value:
        envoy.output = (new, *out[1:]) if isinstance(out, tuple) else new
