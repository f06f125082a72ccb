"""Run a recipe: load the model and SAEs, then one ``generate`` per batch of prompts with every
intervention and monitor in it, on the prompt pass and every generated token.

The per-batch plan comes from :mod:`steer.steering.plan`, the per-token work from
:mod:`steer.steering.edit`, live monitor events from :mod:`steer.steering.live`; the trace
itself is :func:`steer.model.trace.generate`, the one place that calls nnsight.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessorList

from steer.errors import SteerError
from steer.model import LoadedModel
from steer.model.sites import Hook
from steer.model.trace import generate
from steer.plugins.registry import call_plugin
from steer.steering.attach import attach_saes, load_saes, resolve_hub_features
from steer.steering.edit import Readings, edit_hook, sites_by_hook
from steer.steering.generation import (
    StepCounter,
    count_steps,
    eos_ids,
    generate_plain,
    generation_kwargs,
    length_until_eos,
    seed_generation,
)
from steer.steering.live import EventCallback, LiveMonitor
from steer.steering.plan import Site, build_sites
from steer.steering.recipe import Recipe
from steer.steering.remote import check_remote_sae
from steer.steering.results import PromptResult, RunResults

log = logging.getLogger(__name__)

StepCallback = Callable[[int], None]


class Steerer:
    """A recipe bound to a loaded model and SAEs; ``run()`` any number of times.

    Example::

        from steer import Steerer, load_recipe
        steerer = Steerer(load_recipe("recipes/demo.yaml"))
        results = steerer.run()
        print(results.results[0].steered)
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        pm=None,
        model: LoadedModel | None = None,
        device: str | None = None,
    ):
        from steer.model import load_model
        from steer.plugins.manager import get_plugin_manager
        from steer.steering.check import check_recipe

        self.recipe = recipe
        self.pm = pm if pm is not None else get_plugin_manager()
        recipe = check_recipe(recipe, self.pm)  # fail before the slow loads
        self.timing: dict[str, float] = {}
        t0 = time.perf_counter()
        saes = load_saes(recipe, pm=self.pm)
        self.timing["load_saes_s"] = time.perf_counter() - t0
        # SAEs from the Hub are only known once loaded: resolve their labels and ids now.
        self.recipe = recipe = resolve_hub_features(recipe, saes)
        for i, spec in enumerate(recipe.saes):  # a Hub SAE's class is only known now
            check_remote_sae(recipe, i, type(saes[spec.id][0]))
        t0 = time.perf_counter()
        if model is None:
            where = {"remote": recipe.remote} if recipe.remote else {}
            model = load_model(
                recipe.model,
                device=device,
                dtype=recipe.dtype,
                device_map=recipe.device_map,
                **where,
            )
        elif recipe.remote and model.remote != recipe.remote:
            model = dataclasses.replace(model, remote=recipe.remote)  # the caller's stays as it is
        self.model = model
        self.timing["load_model_s"] = time.perf_counter() - t0
        self.saes = attach_saes(saes, self.model, recipe)
        check_prompt_lengths(recipe, self.model)  # before any generation, not minutes in

    def run(
        self,
        *,
        baseline: bool = True,
        on_step: StepCallback | None = None,
        on_event: EventCallback | None = None,
        on_baseline_step: StepCallback | None = None,
    ) -> RunResults:
        """Generate every prompt with the recipe's interventions (and, if ``baseline``, without
        them, with the same seed), batch by batch.

        ``on_step(step)`` is called on every steered generation step (``on_baseline_step`` on
        every baseline one; ``step`` restarts at 0 with each batch), ``on_event(event)`` with
        each monitor event as soon as its token is known (before the next token is generated).
        """
        recipe, gen = self.recipe, self.recipe.generation
        for impl in self.pm.hook.steer_run_started.get_hookimpls():
            call_plugin(impl.plugin_name, "steer_run_started", impl.function, recipe=recipe)
        timing = dict(self.timing, baseline_s=0.0, steered_s=0.0, new_tokens=0)
        results: list[PromptResult] = []
        indices = list(range(len(recipe.prompts)))
        for start in range(0, len(indices), gen.batch_size):
            batch = indices[start : start + gen.batch_size]
            texts = [recipe.prompts[i].text for i in batch]
            enc = self.model.tokenize(texts, chat=gen.chat)
            base_texts: list[str | None] = [None] * len(batch)
            if baseline:
                t0 = time.perf_counter()
                base_ids = generate_plain(self.model, enc, recipe, on_step=on_baseline_step)
                timing["baseline_s"] += time.perf_counter() - t0
                base_texts = self._decode(enc, base_ids)[0]
            # Edits are decoded in float32 at least, then added in the model's dtype: a bf16
            # product would round every decoder row before the change is even applied.
            dtype = torch.promote_types(self.model.hf.dtype, torch.float32)
            sites = build_sites(recipe, batch, self.saes, self.pm, dtype=dtype)
            monitor = None
            if any(site.watches for site in sites):
                monitor = LiveMonitor(
                    tokenizer=self.model.tokenizer,
                    prompt_indices=batch,
                    attention_mask=enc["attention_mask"],
                    eos_ids=eos_ids(self.model),
                    on_event=on_event,
                )
            t0 = time.perf_counter()
            ids = generate_steered(self.model, enc, sites, recipe, on_step=on_step, monitor=monitor)
            timing["steered_s"] += time.perf_counter() - t0
            steered_texts, lengths = self._decode(enc, ids)
            timing["new_tokens"] += sum(lengths)
            for row, i in enumerate(batch):
                result = PromptResult(
                    prompt=recipe.prompts[i].text,
                    baseline=base_texts[row],
                    steered=steered_texts[row],
                )
                if monitor is not None:
                    result.events = monitor.events[row]
                    result.actions = monitor.actions[row]
                    result.trace = monitor.trace(row, ids, lengths[row])
                results.append(result)
        if timing["steered_s"] > 0:
            timing["steered_tok_per_s"] = timing["new_tokens"] / timing["steered_s"]
        run_results = RunResults(results=results, timing=timing)
        for impl in self.pm.hook.steer_run_finished.get_hookimpls():
            try:
                call_plugin(
                    impl.plugin_name,
                    "steer_run_finished",
                    impl.function,
                    recipe=recipe,
                    results=run_results,
                )
            except SteerError as exc:  # a reporter's failure must not lose the results
                log.warning("%s", exc)
        return run_results

    def _decode(self, enc, ids: torch.Tensor) -> tuple[list[str], list[int]]:
        """Completions as text, each cut at its first end-of-sequence token."""
        n_prompt = enc["input_ids"].shape[1]
        eos = eos_ids(self.model)
        texts, lengths = [], []
        for row in ids[:, n_prompt:].tolist():
            length = length_until_eos(row, eos)
            lengths.append(length)
            texts.append(self.model.tokenizer.decode(row[:length], skip_special_tokens=True))
        return texts, lengths


def check_prompt_lengths(recipe: Recipe, model: LoadedModel) -> None:
    """Refuse a prompt that, with ``max_new_tokens``, does not fit the model's context."""
    context = getattr(model.hf.config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return
    gen = recipe.generation
    for i, prompt in enumerate(recipe.prompts):
        n = int(model.tokenize([prompt.text], chat=gen.chat)["input_ids"].shape[1])
        if n + gen.max_new_tokens > context:
            raise SteerError(
                f"{n} tokens, plus max_new_tokens {gen.max_new_tokens}, exceed the model's "
                f"context of {context} tokens",
                where=f"prompts[{i}]",
            )


def generate_steered(
    model: LoadedModel,
    enc: dict[str, torch.Tensor],
    sites: list[Site],
    recipe: Recipe,
    *,
    on_step: StepCallback | None = None,
    monitor: LiveMonitor | None = None,
) -> torch.Tensor:
    """One ``generate`` over the batch with every site's edits on every step.

    Sites with monitors need a ``monitor``: it receives their readings, reports events after
    each step and stops prompts. Returns the output ids [batch, prompt + new].
    """
    valid = enc["attention_mask"].bool()
    if monitor is None and any(site.watches for site in sites):
        raise ValueError("sites with monitors need a LiveMonitor")
    readings = monitor.readings if monitor is not None else Readings()
    kwargs = generation_kwargs(recipe, model)
    # Both run right after each forward pass: a step is counted, then its events are reported.
    # A remote model's forward passes are on a server: its steps are counted when it is done.
    counter = StepCounter(on_step) if on_step and not model.remote else None
    processors = [p for p in (counter, monitor) if p]
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(processors)
    by_hook = sites_by_hook(sites)

    def busy(hook: Hook, step: int) -> bool:
        return any(site.busy_at(step) for site in by_hook[hook])

    def edit(hook: Hook, step: int, hidden: torch.Tensor) -> torch.Tensor:
        # The prompt pass carries left padding; decode steps hold one real token per row.
        mask = valid if step == 0 else None
        return edit_hook(by_hook[hook], hook, step, hidden, mask, readings)

    seed_generation(recipe)
    seed = recipe.generation.seed
    ids = generate(model, enc, kwargs, hooks=list(by_hook), edit=edit, busy=busy, seed=seed)
    if on_step is not None and model.remote:
        count_steps(on_step, enc, ids)
    return ids


def run_recipe(recipe: Recipe, **kwargs: Any) -> RunResults:
    """Load what a recipe needs and run it once: the one-call form of :class:`Steerer`."""
    run_kwargs = {
        k: kwargs.pop(k)
        for k in ("baseline", "on_step", "on_event", "on_baseline_step")
        if k in kwargs
    }
    return Steerer(recipe, **kwargs).run(**run_kwargs)
