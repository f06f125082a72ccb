"""The arms of ``steer eval`` and how each one generates and edits.

* ``none``: the unsteered model (plain transformers ``generate``);
* ``prompt``: the unsteered model, asked in the prompt to talk about the concept;
* ``diffmean@S``: the unit difference-of-means vector of the concept's positive and negative
  texts at the recipe's site, added at L2 norm ``S`` on every token;
* ``recipe@M``: the recipe with every intervention's value multiplied by ``M``.

An arm's *edit* is what it does to one forward pass (for the KL and capability measures):
a prefix for ``prompt``, a function of the site's hidden state for the steered arms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from steer.errors import SteerError
from steer.model import LoadedModel
from steer.model.sites import Hook
from steer.model.trace import generate
from steer.steering.edit import Readings, edit_hook, sites_by_hook
from steer.steering.generation import (
    eos_ids,
    generate_plain,
    generation_kwargs,
    length_until_eos,
    seed_generation,
)
from steer.steering.plan import build_sites
from steer.steering.recipe import PromptSpec, Recipe

INSTRUCTION = "{prompt}\n\nIn your answer, talk about {topic}."
# The same request before a text that is not a prompt (KL and capability of the prompt arm).
PREFIX = "In your answer, talk about {topic}.\n\n"
# (hidden [B, T, d], valid [B, T] or None) -> edited hidden
HiddenEdit = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Arm:
    """One row of the evaluation: a family and, for the steered ones, a strength."""

    family: str  # none | prompt | diffmean | recipe
    strength: float | None = None

    @property
    def name(self) -> str:
        """``none``, ``prompt``, ``diffmean@12.5``, ``recipe@1``."""
        return self.family if self.strength is None else f"{self.family}@{self.strength:g}"


def scaled(recipe: Recipe, factor: float) -> Recipe:
    """``recipe`` with every intervention's value multiplied by ``factor`` (steps without a
    value, such as ``ablate``, are left as they are)."""
    steps = [
        s if s.value is None else s.model_copy(update={"value": s.value * factor})
        for s in recipe.interventions
    ]
    return recipe.model_copy(update={"interventions": steps})


def with_prompts(recipe: Recipe, prompts: list[str]) -> Recipe:
    """``recipe`` over ``prompts`` (recipe-level interventions only; monitors dropped: an
    evaluation measures the edit, not the monitor's actions)."""
    return recipe.model_copy(
        update={"prompts": [PromptSpec(text=p) for p in prompts], "monitors": []}
    )


@dataclass
class Generated:
    """An arm's completions (one per prompt) and how long generating them took."""

    texts: list[str]
    new_tokens: int
    seconds: float


def decode(model: LoadedModel, enc: dict, ids: torch.Tensor) -> tuple[list[str], int]:
    """Completions cut at end-of-sequence, and how many new tokens they hold in all."""
    n_prompt = enc["input_ids"].shape[1]
    eos = eos_ids(model)
    texts, total = [], 0
    for row in ids[:, n_prompt:].tolist():
        length = length_until_eos(row, eos)
        total += length
        texts.append(model.tokenizer.decode(row[:length], skip_special_tokens=True))
    return texts, total


def generate_arm(
    model: LoadedModel,
    recipe: Recipe,
    prompts: list[str],
    *,
    edit: HiddenEdit | None,
    hook: Hook | None,
    on_batch: Callable[[int], None] | None = None,
) -> Generated:
    """Generate ``prompts`` in the recipe's batches and settings with ``edit`` at ``hook`` on
    every step (plain ``generate`` without one). Left padding is masked on the prompt pass."""
    gen = recipe.generation
    texts: list[str] = []
    new_tokens, seconds = 0, 0.0
    for start in range(0, len(prompts), gen.batch_size):
        batch = prompts[start : start + gen.batch_size]
        enc = model.tokenize(batch, chat=gen.chat)
        t0 = time.perf_counter()
        if edit is None or hook is None:
            ids = generate_plain(model, enc, recipe)
        else:
            valid = enc["attention_mask"].bool()

            def step_edit(_hook: Hook, step: int, hidden, valid=valid) -> torch.Tensor:
                return edit(hidden, valid if step == 0 else None)

            seed_generation(recipe)
            kwargs = generation_kwargs(recipe, model)
            ids = generate(model, enc, kwargs, hooks=[hook], edit=step_edit)
        seconds += time.perf_counter() - t0
        out, n = decode(model, enc, ids)
        texts += out
        new_tokens += n
        if on_batch is not None:
            on_batch(len(batch))
    return Generated(texts, new_tokens, seconds)


def vector_edit(vector: torch.Tensor, strength: float) -> HiddenEdit:
    """Add ``strength`` times the unit ``vector`` to every position."""
    unit = vector / vector.norm().clamp_min(1e-12)

    def edit(hidden: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        change = (strength * unit).to(hidden.device, hidden.dtype)
        return hidden + change

    return edit


def recipe_edit(recipe: Recipe, saes: dict, pm, dtype: torch.dtype) -> HiddenEdit:
    """The recipe's interventions as one function of the site's hidden state, the way
    generation applies them to generated tokens (``positions: prompt`` steps only on the
    prompt pass)."""
    hook = recipe_hook(recipe, saes)
    prompt_only = all(s.positions == "prompt" for s in recipe.interventions)
    step = 0 if prompt_only else 1
    built: dict[int, list] = {}  # batch size -> its sites (they are per row)

    def edit(hidden: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        n = hidden.shape[0]
        if n not in built:
            rows = with_prompts(recipe, ["-"] * n)
            built[n] = sites_by_hook(build_sites(rows, list(range(n)), saes, pm, dtype=dtype))[hook]
        return edit_hook(built[n], hook, step, hidden, valid, Readings(keep_scores=False))

    return edit


def recipe_hook(recipe: Recipe, saes: dict) -> Hook:
    """The one site the recipe's interventions edit."""
    hooks = {saes[s.sae][1] for s in recipe.interventions}
    if len(hooks) != 1:
        raise SteerError(
            f"steer eval needs a recipe whose interventions edit one site (got {len(hooks)})"
        )
    return hooks.pop()
