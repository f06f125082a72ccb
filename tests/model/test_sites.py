"""Every site of every family steer has a site table for, on tiny random-weight models of the
real architectures (:mod:`support.families`), checked against plain PyTorch module hooks on
the Hugging Face modules (no nnsight there):

* ``site_output`` reads what a forward (pre-)hook on the family's module reads;
* a ``generate`` edit that adds a vector at a site gives, token for token, what plain
  ``generate`` gives with a torch hook adding the same vector at the same place;
* an edit that returns its input leaves the tokens as the plain model makes them;
* a site a model does not have is a one-line SteerError before anything runs.

The reference paths (:data:`support.families.MODULES`) are written out per family on purpose,
rather than read from :data:`steer.model.layouts.LAYOUTS`; ``resid_mid`` is read there as the
input of the norm before the MLP, a module steer never touches.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import pytest
import torch
from support.families import FAMILIES, LAYERS, MODULES, one_thread, tiny_family

from steer.errors import SteerError
from steer.model import trace
from steer.model.layouts import site_width
from steer.model.sites import SITE_KINDS, Hook


def kinds_of(family: str) -> list[str]:
    """The site kinds ``family`` has."""
    return [k for k in SITE_KINDS if k != "resid_mid" or MODULES[family]["mid"] is not None]


CASES = [
    pytest.param(family, kind, id=f"{family}-{kind}")
    for family in FAMILIES
    for kind in kinds_of(family)
]
PROMPTS = ["The cat sat on the mat. The dog ran", "Paris is"]
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def build():
    """``build(family)``: the family's tiny model and its plain greedy generation, made once
    for the module (which runs on one torch thread)."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            model = tiny_family(family)
            enc = model.tokenize(PROMPTS, chat=False)  # left-padded: a ragged batch
            kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
            kwargs.update(do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
            with torch.inference_mode():
                plain = model.hf.generate(**enc, **kwargs)
            cache[family] = (model, enc, kwargs, plain)
        return cache[family]

    with one_thread():
        yield get


def _module(hf, family: str, layer: int, key: str | None = None):
    paths = MODULES[family]
    block = hf.get_submodule(f"{paths['blocks']}.{layer}")
    return block if key is None else block.get_submodule(paths[key])


def _pre(change):
    """A forward pre-hook (``with_kwargs``) that replaces a module's first input."""

    def hook(_module, args, kwargs):
        if args:
            return (change(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": change(kwargs["hidden_states"])}

    return hook


def _post(change):
    """A forward hook that replaces a module's output (the first element of a tuple)."""

    def hook(_module, _args, out):
        if isinstance(out, tuple):
            return (change(out[0]), *out[1:])
        return change(out)

    return hook


def _where(hf, family: str, hook: Hook, *, writing: bool):
    """``(module, "pre" | "post")``: where a torch hook reads (``writing=False``) or writes
    ``hook``'s value. ``resid_mid`` is read as the MLP norm's input and written, as steer
    writes it, into what the attention adds (so it reaches the residual stream too)."""
    if hook.kind in ("resid_pre", "resid_post"):
        return _module(hf, family, hook.layer), hook.kind.removeprefix("resid_")
    if hook.kind == "resid_mid" and writing:
        return _module(hf, family, hook.layer, "attn"), "post"
    if hook.kind == "resid_mid":
        return _module(hf, family, hook.layer, "mid"), "pre"
    key = {"z": "z", "attn_out": "attn", "mlp_in": "mlp_module", "mlp_out": "mlp"}[hook.kind]
    return _module(hf, family, hook.layer, key), "pre" if hook.kind in ("z", "mlp_in") else "post"


@contextmanager
def torch_hook(hf, family: str, hook: Hook, change, *, writing: bool):
    """A plain torch hook applying ``change`` to ``hook``'s value, for the duration."""
    module, side = _where(hf, family, hook, writing=writing)
    if side == "pre":
        handle = module.register_forward_pre_hook(_pre(change), with_kwargs=True)
    else:
        handle = module.register_forward_hook(_post(change))
    try:
        yield
    finally:
        handle.remove()


def reference_read(hf, family: str, hook: Hook, ids: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []

    def keep(value):
        seen.append(value.detach().clone())
        return value

    with torch_hook(hf, family, hook, keep, writing=False), torch.inference_mode():
        hf(ids)
    assert len(seen) == 1, f"{hook} was read {len(seen)} times"
    return seen[0].float()


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_a_site_reads_what_a_torch_hook_on_the_module_reads(build, family, kind):
    model, enc, _, _ = build(family)
    ids = enc["input_ids"][:1]
    for layer in range(LAYERS):
        hook = Hook.at(kind, layer)
        got = trace.site_output(model, hook, ids)
        assert got.shape == (1, ids.shape[1], site_width(model.hf.config, hook))
        assert torch.equal(got, reference_read(model.hf, family, hook, ids)), hook


@pytest.mark.parametrize("family", FAMILIES)
def test_the_sites_of_a_block_add_up(build, family):
    model, enc, _, _ = build(family)
    ids = enc["input_ids"][:1]
    site = {kind: trace.site_output(model, Hook.at(kind, 1), ids) for kind in kinds_of(family)}
    mid = site["resid_pre"] + site["attn_out"]
    if "resid_mid" in site:
        torch.testing.assert_close(site["resid_mid"], mid)
    torch.testing.assert_close(site["resid_post"], mid + site["mlp_out"])
    torch.testing.assert_close(
        site["resid_pre"], trace.site_output(model, Hook.at("resid_post", 0), ids)
    )
    assert site["z"].shape[-1] == site_width(model.hf.config, Hook.at("z", 1))


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_an_edit_writes_what_a_torch_hook_writes(build, family, kind):
    """Adding a vector at the site, on every step of a greedy generation, gives the tokens
    plain generate gives with a torch hook adding it at the same place."""
    model, enc, kwargs, plain = build(family)
    hook = Hook.at(kind, 1)
    gen = torch.Generator().manual_seed(SITE_KINDS.index(kind))
    push = torch.randn(site_width(model.hf.config, hook), generator=gen) * 4
    with torch_hook(model.hf, family, hook, lambda v: v + push, writing=True), torch.no_grad():
        want = model.hf.generate(**enc, **kwargs)
    got = trace.generate(model, enc, kwargs, hooks=[hook], edit=lambda _h, _s, v: v + push)
    assert torch.equal(got, want)
    assert not torch.equal(got, plain), "the push should change the tokens"


@pytest.mark.parametrize("family", FAMILIES)
def test_edits_at_every_site_at_once_write_what_torch_hooks_write(build, family):
    """Every site of block 1, and block 0's input (the embeddings) and output (block 1's
    input too), at once: the edits run in forward order on every step, each on what the ones
    before it wrote."""
    model, enc, kwargs, plain = build(family)
    hooks = [Hook.at(kind, 1) for kind in reversed(kinds_of(family))]
    hooks += [Hook.at("resid_post", 0), Hook.at("resid_pre", 0)]
    gen = torch.Generator().manual_seed(7)
    pushes = {h: torch.randn(site_width(model.hf.config, h), generator=gen) for h in hooks}
    with ExitStack() as stack, torch.no_grad():
        for hook, push in pushes.items():
            add = lambda v, push=push: v + push  # noqa: E731
            stack.enter_context(torch_hook(model.hf, family, hook, add, writing=True))
        want = model.hf.generate(**enc, **kwargs)
    seen: list[tuple[int, Hook]] = []

    def edit(hook, step, value):
        seen.append((step, hook))
        return value + pushes[hook]

    got = trace.generate(model, enc, kwargs, hooks=hooks, edit=edit)
    assert torch.equal(got, want)
    assert not torch.equal(got, plain)
    assert seen == [(step, h) for step in range(NEW_TOKENS) for h in sorted(hooks)]


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_an_edit_that_returns_its_input_gives_the_plain_tokens(build, family, kind):
    model, enc, kwargs, plain = build(family)
    hook = Hook.at(kind, 1)
    shapes: list[tuple[int, tuple[int, ...]]] = []

    def edit(seen, step, value):
        assert seen == hook
        shapes.append((step, tuple(value.shape)))
        return value

    assert torch.equal(trace.generate(model, enc, kwargs, hooks=[hook], edit=edit), plain)
    width, n_prompt = site_width(model.hf.config, hook), enc["input_ids"].shape[1]
    # the prompt pass, then one token per step (the last new token is never read)
    want = [(0, (2, n_prompt, width))] + [(s, (2, 1, width)) for s in range(1, NEW_TOKENS)]
    assert shapes == want


@pytest.mark.parametrize(
    ("family", "hook", "message"),
    [
        (
            "gpt_neox",
            Hook.at("resid_mid", 1),
            "gpt_neox blocks run attention and MLP in parallel: there is no resid_mid site",
        ),
        (
            "llama",
            Hook.at("mlp_out", 3),
            "the SAE's layer 3 is out of range (the model has 3 layers)",
        ),
        (
            "gpt2",
            Hook.at("resid_post", 7),
            "the SAE's layer 7 is out of range (the model has 3 layers)",
        ),
    ],
)
def test_a_site_the_model_does_not_have_is_refused(build, family, hook, message):
    model, enc, kwargs, _ = build(family)
    with pytest.raises(SteerError) as info:
        trace.site_output(model, hook, enc["input_ids"])
    assert str(info.value) == message
    with pytest.raises(SteerError) as info:
        trace.generate(model, enc, kwargs, hooks=[hook], edit=lambda _h, _s, v: v)
    assert str(info.value) == message
