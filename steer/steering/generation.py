"""Plain generation settings and decoding, shared by the steered and the baseline runs: the
transformers ``generate`` arguments of a recipe, the unsteered completion, and cutting
completions at end-of-sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor

from steer.model import LoadedModel
from steer.model.trace import generate
from steer.steering.recipe import Recipe


def eos_ids(model: LoadedModel) -> set[int]:
    eos = model.hf.generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def length_until_eos(row: list[int], eos: set[int]) -> int:
    for i, token in enumerate(row):
        if token in eos:
            return i
    return len(row)


def generation_kwargs(recipe: Recipe, model: LoadedModel) -> dict[str, Any]:
    """transformers ``generate`` arguments for a recipe's ``generation`` block."""
    gen = recipe.generation
    kwargs: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens,
        "min_new_tokens": min(gen.min_new_tokens, gen.max_new_tokens),
        "pad_token_id": model.tokenizer.pad_token_id,
    }
    if gen.temperature > 0:
        kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def seed_generation(recipe: Recipe) -> None:
    if recipe.generation.seed is not None:
        torch.manual_seed(recipe.generation.seed)


def generate_plain(
    model: LoadedModel,
    enc: dict[str, torch.Tensor],
    recipe: Recipe,
    *,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The unsteered completion: plain transformers ``generate``, same seed and settings;
    ``on_step(step)`` after every forward pass (see :class:`StepCounter`). A remote model
    generates through an nnsight trace with no edits, and counts its steps when it is done."""
    seed_generation(recipe)
    if model.remote:
        seed = recipe.generation.seed
        ids = generate(model, enc, generation_kwargs(recipe, model), seed=seed)
        if on_step is not None:
            count_steps(on_step, enc, ids)
        return ids
    extra = {"logits_processor": [StepCounter(on_step)]} if on_step is not None else {}
    with torch.inference_mode():
        return model.hf.generate(**enc, **generation_kwargs(recipe, model), **extra)


def count_steps(on_step: Callable[[int], None], enc: dict[str, torch.Tensor], ids: torch.Tensor):
    """``on_step`` for each step of a finished generation (a remote one: its steps could not be
    counted as they ran)."""
    for step in range(ids.shape[1] - enc["input_ids"].shape[1]):
        on_step(step)


class StepCounter(LogitsProcessor):
    """Calls ``on_step(step)`` after every forward pass of ``generate`` (step 0: the prompt
    pass; step k: the k-th generated token), without touching the scores."""

    def __init__(self, on_step: Callable[[int], None]):
        self.on_step = on_step
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.on_step(self.step)
        self.step += 1
        return scores
