"""The nnsight adapter: the only module in steer that calls nnsight.

Everything else asks this module for what it needs -- a block's output, logits with a block's
output replaced, a generation with per-step edits -- in plain torch terms, so a change of
nnsight version touches this file alone.

Blocks are reached through nnsight's ``rename=`` aliases (:data:`ALIASES`): every family's list
of transformer blocks is ``.layers`` and its final norm ``.final_norm``, whatever the family
calls them. A block's ``.output`` is the residual stream after it (a plain tensor in
transformers 5).

Traces that only read run under ``inference_mode`` (nnsight traces with autograd on otherwise,
1.5-2.4x slower). nnsight re-reads a traced ``with`` block from source, so each one starts on
its own line and the nesting below is deliberate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from steer.errors import SteerError

# HF module path -> the name steer uses, for every model family steer knows. A key that does
# not exist in a model is skipped by nnsight, so one table serves every family.
ALIASES: dict[str, str] = {
    "model.layers": "layers",  # Llama, Mistral, Gemma, Qwen, Phi-3
    "transformer.h": "layers",  # GPT-2
    "gpt_neox.layers": "layers",  # GPT-NeoX / Pythia
    "model.decoder.layers": "layers",  # OPT
    "model.norm": "final_norm",
    "transformer.ln_f": "final_norm",
    "gpt_neox.final_layer_norm": "final_norm",
    "model.decoder.final_layer_norm": "final_norm",
}

# (layer, step, hidden [batch, seq, d]) -> the new hidden state (the same object if unchanged)
StepEdit = Callable[[int, int, torch.Tensor], torch.Tensor]


def wrap(hf: Any, tokenizer: Any) -> Any:
    """The nnsight wrapper around a transformers causal LM (same module objects, no copy)."""
    from nnsight import TransformersModel

    return TransformersModel(hf, tokenizer=tokenizer, task="text-generation", rename=ALIASES)


def _blocks(model: Any) -> Any:
    blocks = getattr(model.lm, "layers", None)
    if blocks is None:
        raise SteerError(
            f"cannot find the transformer blocks of {type(model.hf).__name__} "
            f"(known layouts: {', '.join(k for k, v in ALIASES.items() if v == 'layers')})"
        )
    return blocks


def _block(model: Any, layer: int) -> Any:
    return _blocks(model)[layer]


def block_path(model: Any, layer: int) -> str:
    """The HF module path of block ``layer`` (e.g. ``model.layers.12``): an SAE's
    ``hf_hook_name`` for the residual stream after that block."""
    # nnsight names the root envoy "model"; the rest of the path is the module's own.
    return _block(model, layer).path.removeprefix("model.")


def final_norm_weight(model: Any) -> torch.Tensor | None:
    """The elementwise weight of the norm before the unembedding, or ``None``."""
    norm = getattr(model.lm, "final_norm", None)
    if norm is None:
        return None
    weight = getattr(model.hf.get_submodule(norm.path.removeprefix("model.")), "weight", None)
    return weight.detach().float() if isinstance(weight, torch.Tensor) else None


def layer_output(model: Any, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after block ``layer`` for ``ids`` ``[B, T]``: ``[B, T, d]`` float32.

    The forward pass stops right after the block (2.9x a full forward on SmolLM2 L12).
    """
    envoy = _block(model, layer)
    with torch.inference_mode():  # noqa: SIM117 - nnsight needs each traced `with` on its own line
        with model.lm.trace(ids.long()) as tracer:
            hidden = envoy.output.save()
            tracer.stop()
    return hidden.float()


def clean_run(model: Any, layer: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden [B, T, d], logits [B, T, vocab])``, both float32: block ``layer``'s output and
    the model's logits, from one full forward pass."""
    envoy = _block(model, layer)
    with torch.inference_mode():  # noqa: SIM117 - nnsight needs the traced `with` on its own line
        with model.lm.trace(ids):
            hidden = envoy.output.save()
            logits = model.lm.output.logits.save()
    return hidden.float(), logits.float()


def patched_logits(model: Any, layer: int, ids: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, T, vocab]`` (float32) with block ``layer``'s output replaced by ``new``."""
    envoy = _block(model, layer)
    with torch.inference_mode():  # noqa: SIM117 - nnsight needs the traced `with` on its own line
        with model.lm.trace(ids):
            envoy.output = new
            logits = model.lm.output.logits.save()
    return logits.float()


def last_logits(model: Any, layer: int, ids: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 1, vocab]`` at the last position with block ``layer``'s output set to
    ``new`` ``[B, T, d]``.

    ``logits_to_keep=1`` makes the model apply its unembedding to the last position only (on
    SmolLM2 the 49k-wide unembedding is ~20 % of a forward). Autograd stays as the caller has
    it: pinpoint's attribution runs this under ``enable_grad`` and calls ``backward`` on the
    result, its verification under ``inference_mode``.
    """
    envoy = _block(model, layer)
    with model.lm.trace(ids, logits_to_keep=1):
        envoy.output = new
        logits = model.lm.output.logits.save()
    return logits


def generate(
    model: Any,
    enc: dict[str, torch.Tensor],
    gen_kwargs: dict[str, Any],
    *,
    layers: Sequence[int] = (),
    edit: StepEdit | None = None,
    busy: Callable[[int, int], bool] | None = None,
) -> torch.Tensor:
    """One ``generate`` over a batch with ``edit`` applied at each of ``layers`` on every step.

    Step 0 is the prompt pass, step k >= 1 the k-th generated token. On each step, for each
    layer (in forward order) where ``busy(layer, step)`` holds, ``edit(layer, step, hidden)``
    gets the block's output and returns the new one; returning the same object leaves the
    block's output alone. ``gen_kwargs`` go to transformers ``generate``; a
    ``logits_processor`` in them runs after every forward pass (that is where callers count
    steps: a traced step loop that touches no block never sees the model advance and would
    wait forever). Returns the output ids ``[batch, prompt + new]``.
    """
    lm = model.lm
    envoys = [(layer, _block(model, layer)) for layer in sorted(layers)]

    def step_edits(step: int) -> None:
        touched = False
        for layer, envoy in envoys:
            if busy is not None and not busy(layer, step):
                continue
            hidden = envoy.output
            touched = True
            new = edit(layer, step, hidden)
            if new is not hidden:
                envoy.output = new
        if not touched:
            # A step that reads no block is not tied to the model's own steps: nnsight would
            # run the loop on without waiting for them, forever. Reading one keeps it in step.
            _ = envoys[0][1].output

    with warnings.catch_warnings():
        # An open-ended step loop leaves one request parked past the last token; nnsight
        # reports that as a warning although it is the expected way to end.
        warnings.filterwarnings("ignore", message=".*was never reached")
        with torch.inference_mode():  # noqa: SIM117 - nnsight re-reads the traced `with` block
            with lm.generate(**gen_kwargs) as tracer:
                with tracer.invoke(enc):
                    if envoys and edit is not None:
                        for step in tracer.all():
                            step_edits(step)
                with tracer.invoke():
                    ids = tracer.result.save()
    return ids
