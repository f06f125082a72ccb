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

A model whose ``remote`` is set (:mod:`steer.model.remote`) runs the traces below through
nnsight's remote backend. Their bodies name envoys and plain values, never the
``LoadedModel`` (it does not pickle), and return what they read as saved locals of the body:
that is all a server sends back.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from steer.errors import SteerError
from steer.model.blockedit import edit_sites
from steer.model.layouts import check_site, layout_of
from steer.model.remote import shipped
from steer.model.sites import Hook

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

# (hook, step, hidden [batch, seq, d]) -> the new value (the same object if unchanged)
StepEdit = Callable[[Hook, int, torch.Tensor], torch.Tensor]


def wrap(hf: Any, tokenizer: Any) -> Any:
    """The nnsight wrapper around a transformers causal LM (same module objects, no copy)."""
    _before_nnsight()
    from nnsight import TransformersModel

    # A model with no weights here (it runs on a server): its pipeline must not move it.
    first = next(hf.parameters(), None)
    meta = {"device": "meta"} if first is not None and first.is_meta else {}
    return TransformersModel(
        hf, tokenizer=tokenizer, task="text-generation", rename=ALIASES, **meta
    )


def _before_nnsight() -> None:
    """Define anyio's typed-attribute classes without nnsight's ``.save`` on every object.

    nnsight's import gives every object a ``.save`` attribute; anyio checks that each public
    attribute of its ``TypedAttributeSet`` subclasses is annotated when they are defined, so
    any defined while ``.save`` is mounted fail (``Attribute 'save' is missing its type
    annotation``), and with them every server and HTTP client on anyio (uvicorn, Starlette,
    httpx). They are defined here first; where nnsight is in already (a Ray replica
    unpickles it before steer runs), ``.save`` is taken off for that moment.
    """
    try:
        import anyio
    except ImportError:  # no anyio: nothing to protect
        return
    nnsight = sys.modules.get("nnsight")
    mounted = nnsight is not None and hasattr(object(), "save")
    if mounted:
        from nnsight._c import mount, unmount

        unmount("save")
    try:
        import anyio._backends._asyncio
        import anyio.streams.file
        import anyio.streams.tls  # noqa: F401
    finally:
        if mounted:
            mount(nnsight.save, "save")


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


def block_device(model: Any, layer: int) -> torch.device:
    """The device block ``layer``'s weights are on: the model's device, or, with a
    ``device_map``, that block's GPU (an SAE at the block goes there)."""
    module = model.hf.get_submodule(block_path(model, layer))
    first = next(module.parameters(), None)
    if first is None or first.is_meta:  # no weights here (a remote model): the CPU
        return torch.device(model.device)
    return first.device


def final_norm_weight(model: Any) -> torch.Tensor | None:
    """The elementwise weight of the norm before the unembedding, or ``None``."""
    norm = getattr(model.lm, "final_norm", None)
    if norm is None:
        return None
    weight = getattr(model.hf.get_submodule(norm.path.removeprefix("model.")), "weight", None)
    return weight.detach().float() if isinstance(weight, torch.Tensor) else None


def layer_output(model: Any, layer: int | Hook, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after block ``layer`` for ``ids`` ``[B, T]``: ``[B, T, d]`` float32
    (a :class:`Hook`: that site's value, as :func:`site_output`).

    The forward pass stops right after the block (2.9x a full forward on SmolLM2 L12).
    """
    if isinstance(layer, Hook):
        return site_output(model, layer, ids)
    envoy = _block(model, layer)
    with shipped(model.remote) as where, torch.inference_mode():  # noqa: SIM117 - see above
        with model.lm.trace(ids.long(), **where) as tracer:
            hidden = envoy.output.save()
            tracer.stop()
    return hidden.float()


def _site(model: Any, layer: int | Hook) -> tuple[Hook, Any]:
    """``(hook, layout)`` for a block number (the residual stream after it) or a Hook; the
    layout (None for resid_post, which every family has) says where its module is."""
    hook = layer if isinstance(layer, Hook) else Hook.at("resid_post", layer)
    return hook, None if hook.kind == "resid_post" else layout_of(model.hf.config)


def site_output(model: Any, hook: Hook, ids: torch.Tensor) -> torch.Tensor:
    """The value at ``hook`` for ``ids`` ``[B, T]``: ``[B, T, width]`` float32. The forward
    pass stops right after the block. A site the model does not have is a SteerError."""
    check_site(model.hf.config, hook)
    if hook.kind == "resid_post":
        return layer_output(model, hook.layer, ids)
    hook, layout = _site(model, hook)
    block = _block(model, hook.layer)
    with shipped(model.remote) as where, torch.inference_mode():  # noqa: SIM117 - see above
        with model.lm.trace(ids.long(), **where) as tracer:
            seen = {}  # the value at the site, as the site's editor sees it (left unchanged)
            edit_sites(block, layout, [hook], lambda _hook, value: seen.setdefault("v", value))
            seen = seen.save()
            _ = block.output
            tracer.stop()
    return seen["v"].float()


def sites_output(model: Any, hooks: Sequence[Hook], ids: torch.Tensor) -> list[torch.Tensor]:
    """The values at several ``hooks`` for ``ids`` in one forward pass (stopped after the last
    block they read): ``[B, T, width]`` float32 each, in the order of ``hooks``. Collecting
    four layers' activations this way costs one pass to the deepest, not four."""
    for hook in hooks:
        check_site(model.hf.config, hook)
    by_layer, layout = _by_layer(model, hooks)
    found: dict[Hook, torch.Tensor] = {}

    def record(hook: Hook, value: torch.Tensor) -> torch.Tensor:
        found[hook] = value.save()
        return value

    with torch.inference_mode():  # noqa: SIM117 - nnsight needs each traced `with` on its own line
        with model.lm.trace(ids.long()) as tracer:
            for layer, group in by_layer.items():
                edit_block(model, layout, layer, group, record)
            _ = _block(model, max(by_layer)).output
            tracer.stop()
    return [found[hook].float() for hook in hooks]


def edit_block(model: Any, layout: Any, layer: int, hooks: Sequence[Hook], fn: Any) -> None:
    """Inside a trace: :func:`~steer.model.blockedit.edit_sites` on block ``layer``."""
    edit_sites(_block(model, layer), layout, hooks, fn)


def clean_run(
    model: Any, layer: int | Hook, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden [B, T, d], logits [B, T, vocab])``, both float32: block ``layer``'s output (or
    a :class:`Hook`'s value) and the model's logits, from one full forward pass."""
    hook, layout = _site(model, layer)
    block, lm = _block(model, hook.layer), model.lm
    with shipped(model.remote) as where, torch.inference_mode():  # noqa: SIM117 - see above
        with lm.trace(ids, **where):
            seen = {}
            edit_sites(block, layout, [hook], lambda _hook, value: seen.setdefault("v", value))
            seen = seen.save()
            logits = lm.output.logits.save()
    return seen["v"].float(), logits.float()


def patched_logits(
    model: Any, layer: int | Hook, ids: torch.Tensor, new: torch.Tensor
) -> torch.Tensor:
    """Logits ``[B, T, vocab]`` (float32) with block ``layer``'s output (or a :class:`Hook`'s
    value) replaced by ``new``."""
    hook, layout = _site(model, layer)
    block, lm = _block(model, hook.layer), model.lm

    def replace(_hook: Hook, value: torch.Tensor) -> torch.Tensor:
        return new.to(value.device, value.dtype)  # a server's GPU, for a remote model

    with shipped(model.remote) as where, torch.inference_mode():  # noqa: SIM117 - see above
        with lm.trace(ids, **where):
            edit_sites(block, layout, [hook], replace)
            logits = lm.output.logits.save()
    return logits.float()


def last_logits(model: Any, layer: int, ids: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 1, vocab]`` at the last position with block ``layer``'s output set to
    ``new`` ``[B, T, d]``.

    ``logits_to_keep=1`` makes the model apply its unembedding to the last position only (on
    SmolLM2 the 49k-wide unembedding is ~20 % of a forward). Autograd stays as the caller has
    it: pinpoint's attribution runs this under ``enable_grad`` and calls ``backward`` on the
    result, its verification under ``inference_mode``. On a remote model the backward is a
    second trace, sent when autograd reaches it (:class:`_RemoteLastLogits`).
    """
    if model.remote and torch.is_grad_enabled() and new.requires_grad:
        return _RemoteLastLogits.apply(new, model, layer, ids)
    envoy, lm = _block(model, layer), model.lm
    with shipped(model.remote) as where:  # noqa: SIM117 - nnsight re-reads the traced `with`
        with lm.trace(ids, logits_to_keep=1, **where):
            envoy.output = new.to(envoy.output.device)
            logits = lm.output.logits.save()
    return logits


class _RemoteLastLogits(torch.autograd.Function):
    """:func:`last_logits` as one autograd step whose backward runs where the model does:
    a remote trace returns tensors with no graph, so the gradient of the logits is sent back
    with a second trace that backpropagates it to the replaced block output."""

    @staticmethod
    def forward(ctx: Any, new: torch.Tensor, model: Any, layer: int, ids: torch.Tensor) -> Any:
        ctx.model, ctx.layer, ctx.ids = model, layer, ids
        ctx.save_for_backward(new)
        return last_logits(model, layer, ids, new)  # autograd is off in here

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (new,) = ctx.saved_tensors
        envoy, lm = _block(ctx.model, ctx.layer), ctx.model.lm
        leaf = new.detach().requires_grad_(True)
        with shipped(ctx.model.remote) as where, torch.enable_grad():  # noqa: SIM117 - see above
            with lm.trace(ctx.ids, logits_to_keep=1, **where):
                envoy.output = leaf.to(envoy.output.device)
                logits = lm.output.logits
                with logits.backward(grad.to(logits.device)):
                    back = leaf.grad.save()
        return back.to(new.device), None, None, None


def _by_layer(model: Any, hooks: Sequence[Hook]) -> tuple[dict[int, list[Hook]], Any]:
    """``hooks`` grouped by block, each group in forward order, and the layout that finds
    their modules (``None`` when every hook is a block output, which every family has)."""
    by_layer: dict[int, list[Hook]] = {}
    for hook in sorted(hooks):
        by_layer.setdefault(hook.layer, []).append(hook)
    layout = None if all(h.kind == "resid_post" for h in hooks) else layout_of(model.hf.config)
    return by_layer, layout


def generate(
    model: Any,
    enc: dict[str, torch.Tensor],
    gen_kwargs: dict[str, Any],
    *,
    hooks: Sequence[Hook] = (),
    edit: StepEdit | None = None,
    busy: Callable[[Hook, int], bool] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """One ``generate`` over a batch with ``edit`` applied at each of ``hooks`` on every step.

    Step 0 is the prompt pass, step k >= 1 the k-th generated token. On each step, for each
    hook (in forward order) where ``busy(hook, step)`` holds, ``edit(hook, step, value)`` gets
    the site's value and returns the new one; returning the same object leaves it alone.
    ``gen_kwargs`` go to transformers ``generate``; a ``logits_processor`` in them runs after
    every forward pass (that is where callers count steps: a traced step loop that touches no
    module never sees the model advance and would wait forever). Returns the output ids
    ``[batch, prompt + new]``. A hook at a site the model does not have is a SteerError.
    ``seed`` seeds torch where the model runs (a server, for a remote model) before it samples.
    """
    for hook in hooks:
        check_site(model.hf.config, hook)
    lm, blocks = model.lm, _blocks(model)
    by_layer, layout = _by_layer(model, hooks)

    def step_edits(step: int) -> None:
        touched = False
        for layer, layer_hooks in by_layer.items():
            active = [h for h in layer_hooks if busy is None or busy(h, step)]
            if active:
                touched = True
                edit_sites(blocks[layer], layout, active, lambda h, v: edit(h, step, v))
        if not touched:
            # A step that reads no module is not tied to the model's own steps: nnsight would
            # run the loop on without waiting for them, forever. Reading one keeps it in step.
            _ = blocks[next(iter(by_layer))].output

    with warnings.catch_warnings(), shipped(model.remote) as where:
        # An open-ended step loop leaves one request parked past the last token; nnsight
        # reports that as a warning although it is the expected way to end.
        warnings.filterwarnings("ignore", message=".*was never reached")
        with torch.inference_mode():  # noqa: SIM117 - nnsight re-reads the traced `with` block
            with lm.generate(**gen_kwargs, **where) as tracer:
                with tracer.invoke(enc):
                    if seed is not None:
                        torch.manual_seed(seed)
                    if by_layer and edit is not None:
                        for step in tracer.all():
                            step_edits(step)
                with tracer.invoke():
                    ids = tracer.result.save()
    return ids


def forward_step(
    model: Any,
    inputs: dict[str, Any],
    *,
    hooks: Sequence[Hook] = (),
    edit: Callable[[Hook, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One forward pass of ``inputs`` (``input_ids``, ``attention_mask``, ``position_ids`` and
    a transformers ``cache``, which it extends) with ``edit(hook, value)`` applied at each of
    ``hooks`` as :func:`generate` does: the building block of a step loop that is not
    transformers ``generate`` (a server's, where requests join and leave between steps).

    Returns the logits of each row's last position, ``[batch, vocab]`` float32. Without hooks
    it is the plain model: nothing of nnsight on a step that edits nothing.
    """
    kwargs = dict(inputs, use_cache=True, logits_to_keep=1)
    if not hooks or edit is None:
        with torch.inference_mode():
            return model.hf(**kwargs).logits[:, -1].float()
    by_layer, layout = _by_layer(model, hooks)
    with torch.inference_mode():  # noqa: SIM117 - nnsight re-reads the traced `with` block
        with model.lm.trace(**kwargs):
            for layer, layer_hooks in by_layer.items():
                edit_block(model, layout, layer, layer_hooks, edit)
            logits = model.lm.output.logits.save()
    return logits[:, -1].float()
