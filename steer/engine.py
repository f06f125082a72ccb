"""Run a recipe: load the model and SAEs, then one nnsight ``generate`` per batch of prompts
with every intervention and monitor in it, on the prompt pass and every generated token.

The nnsight calls live here and in :mod:`steer.model` only, so a change of nnsight version
touches two files.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

from steer.edit import Readings, edit_site
from steer.errors import SteerError
from steer.model import LoadedModel, load_model
from steer.monitoring.live import EventCallback, LiveMonitor
from steer.plan import Site, build_sites
from steer.recipe import Recipe
from steer.sae import check_fits_model, load_sae
from steer.sae.base import SAE
from steer.sae.sources import resolve_sae_path

log = logging.getLogger(__name__)

StepCallback = Callable[[int], None]


@dataclass
class PromptResult:
    """One prompt's completions and the monitor events of its steered run."""

    prompt: str
    baseline: str | None
    steered: str
    events: list[dict[str, Any]] = field(default_factory=list)
    # The first event of each monitor whose action is not `log`: where a warning, a stop or a
    # conditional intervention started.
    actions: list[dict[str, Any]] = field(default_factory=list)
    # Tokens and per-token monitor scores (see LiveMonitor.trace); None without monitors.
    trace: dict[str, Any] | None = None


@dataclass
class RunResults:
    """What ``steer run`` produces: one entry per prompt, plus timings in seconds."""

    results: list[PromptResult]
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "timing": dict(self.timing)}


def load_saes(recipe: Recipe, *, pm=None) -> dict[str, tuple[SAE, int | None]]:
    """Load every SAE of a recipe (on the CPU) with the layer it attaches to. Done before the
    model loads, so missing or corrupt SAE files fail in milliseconds."""
    loaded: dict[str, tuple[SAE, int | None]] = {}
    for i, spec in enumerate(recipe.saes):
        where = f"saes[{i}]"
        sae = load_sae(resolve_sae_path(spec, where=where), pm=pm)
        if spec.layer is not None and sae.cfg.layer is not None and spec.layer != sae.cfg.layer:
            raise SteerError(
                f"layer {spec.layer} does not match the SAE, trained on layer {sae.cfg.layer}",
                where=f"{where}.layer",
            )
        loaded[spec.id] = (sae, spec.layer if spec.layer is not None else sae.cfg.layer)
    return loaded


def _resolve_hub_features(recipe: Recipe, saes: dict[str, tuple[SAE, int | None]]) -> Recipe:
    from steer.check import resolve_features

    labelled = {
        step.sae for _, step in recipe.steps() if any(isinstance(f, str) for f in step.features)
    }
    hub: dict[str, tuple[Path, int]] = {}
    for i, spec in enumerate(recipe.saes):
        if spec.hf is not None:
            # The folder is only read for labels; it is in the Hugging Face cache by now.
            folder = resolve_sae_path(spec, where=f"saes[{i}]") if spec.id in labelled else Path()
            hub[spec.id] = (folder, saes[spec.id][0].cfg.d_sae)
    return resolve_features(recipe, hub) if hub else recipe


def attach_saes(
    saes: dict[str, tuple[SAE, int | None]], model: LoadedModel, recipe: Recipe
) -> dict[str, tuple[SAE, int]]:
    """Check each SAE fits the model (width, layer) and move it to the model's device."""
    attached: dict[str, tuple[SAE, int]] = {}
    for i, spec in enumerate(recipe.saes):
        sae, layer = saes[spec.id]
        where = f"saes[{i}]"
        check_fits_model(
            sae, d_model=model.d_model, n_layers=model.n_layers, where=where, layer=layer
        )
        attached[spec.id] = (sae.to(model.device).eval(), layer)  # check_fits_model: not None
    return attached


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
        from steer.check import check_recipe
        from steer.plugins import get_plugin_manager

        self.recipe = recipe
        self.pm = pm if pm is not None else get_plugin_manager()
        recipe = check_recipe(recipe, self.pm)  # fail before the slow loads
        self.timing: dict[str, float] = {}
        t0 = time.perf_counter()
        saes = load_saes(recipe, pm=self.pm)
        self.timing["load_saes_s"] = time.perf_counter() - t0
        # SAEs from the Hub are only known once loaded: resolve their labels and ids now.
        self.recipe = recipe = _resolve_hub_features(recipe, saes)
        t0 = time.perf_counter()
        self.model = model if model is not None else load_model(recipe.model, device=device)
        self.timing["load_model_s"] = time.perf_counter() - t0
        self.saes = attach_saes(saes, self.model, recipe)

    def run(
        self,
        *,
        baseline: bool = True,
        on_step: StepCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResults:
        """Generate every prompt with the recipe's interventions (and, if ``baseline``, without
        them, with the same seed), batch by batch.

        ``on_step(step)`` is called on every generation step, ``on_event(event)`` with each
        monitor event as soon as its token is known (before the next token is generated).
        """
        recipe, gen = self.recipe, self.recipe.generation
        self.pm.hook.steer_run_started(recipe=recipe)
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
                base_ids = generate_plain(self.model, enc, recipe)
                timing["baseline_s"] += time.perf_counter() - t0
                base_texts = self._decode(enc, base_ids)[0]
            sites = build_sites(
                recipe,
                batch,
                self.saes,
                self.pm,
                dtype=self.model.hf.dtype,
                device=self.model.device,
            )
            monitor = None
            if any(site.watches for site in sites):
                monitor = LiveMonitor(
                    tokenizer=self.model.tokenizer,
                    prompt_indices=batch,
                    attention_mask=enc["attention_mask"],
                    eos_ids=_eos_ids(self.model),
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
        try:
            self.pm.hook.steer_run_finished(recipe=recipe, results=run_results)
        except Exception as exc:  # a reporter's failure must not lose the results
            log.warning("a steer_run_finished plugin failed: %s: %s", type(exc).__name__, exc)
        return run_results

    def _decode(self, enc, ids: torch.Tensor) -> tuple[list[str], list[int]]:
        """Completions as text, each cut at its first end-of-sequence token."""
        n_prompt = enc["input_ids"].shape[1]
        eos = _eos_ids(self.model)
        texts, lengths = [], []
        for row in ids[:, n_prompt:].tolist():
            length = _length_until_eos(row, eos)
            lengths.append(length)
            texts.append(self.model.tokenizer.decode(row[:length], skip_special_tokens=True))
        return texts, lengths


def _eos_ids(model: LoadedModel) -> set[int]:
    eos = model.hf.generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def _length_until_eos(row: list[int], eos: set[int]) -> int:
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


def _seed(recipe: Recipe) -> None:
    if recipe.generation.seed is not None:
        torch.manual_seed(recipe.generation.seed)


def generate_plain(
    model: LoadedModel, enc: dict[str, torch.Tensor], recipe: Recipe
) -> torch.Tensor:
    """The unsteered completion: plain transformers ``generate``, same seed and settings."""
    _seed(recipe)
    with torch.inference_mode():
        return model.hf.generate(**enc, **generation_kwargs(recipe, model))


def generate_steered(
    model: LoadedModel,
    enc: dict[str, torch.Tensor],
    sites: list[Site],
    recipe: Recipe,
    *,
    on_step: StepCallback | None = None,
    monitor: LiveMonitor | None = None,
) -> torch.Tensor:
    """One nnsight ``generate`` over the batch with every site's edits on every step.

    Sites with monitors need a ``monitor``: it receives their readings, reports events after
    each step and stops prompts. Returns the output ids [batch, prompt + new].
    """
    lm = model.lm
    valid = enc["attention_mask"].bool()
    watching = any(site.watches for site in sites)
    if watching and monitor is None:
        raise ValueError("sites with monitors need a LiveMonitor")
    readings = monitor.readings if monitor is not None else Readings()
    kwargs = generation_kwargs(recipe, model)
    if monitor is not None:
        kwargs["logits_processor"] = LogitsProcessorList([monitor])
    by_layer: dict[int, list[Site]] = {}
    for site in sites:
        by_layer.setdefault(site.layer, []).append(site)
    # Sites must be visited in the order the forward pass reaches them.
    layers = [(layer, model.layer_envoy(layer), by_layer[layer]) for layer in sorted(by_layer)]
    _seed(recipe)
    with warnings.catch_warnings():
        # An open-ended step loop leaves one request parked past the last token; nnsight
        # reports that as a warning although it is the expected way to end.
        warnings.filterwarnings("ignore", message=".*was never reached")
        # Nested, not combined: nnsight re-reads the traced `with` block from source.
        with torch.inference_mode():  # noqa: SIM117
            with lm.generate(**kwargs) as tracer:
                with tracer.invoke(enc):
                    if layers or on_step is not None:
                        for step in tracer.all():
                            _step(layers, step, valid, readings)
                            if on_step is not None:
                                on_step(step)
                with tracer.invoke():
                    ids = tracer.result.save()
    return ids


def _step(layers, step: int, valid: torch.Tensor, readings: Readings) -> None:
    """Edit every site on one generation step. Called from inside the nnsight trace."""
    for _layer, envoy, sites in layers:
        if not any(site.busy_at(step) for site in sites):
            continue
        hidden = original = envoy.output
        for site in sites:
            hidden = edit_site(site, hidden, step, valid if step == 0 else None, readings)
        if hidden is not original:
            envoy.output = hidden


def run_recipe(recipe: Recipe, **kwargs: Any) -> RunResults:
    """Load what a recipe needs and run it once: the one-call form of :class:`Steerer`."""
    run_kwargs = {k: kwargs.pop(k) for k in ("baseline", "on_step", "on_event") if k in kwargs}
    return Steerer(recipe, **kwargs).run(**run_kwargs)
