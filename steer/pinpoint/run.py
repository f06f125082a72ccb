"""Run a pinpoint recipe: attribute, rank, verify by ablation, compare with neurons, measure
side effects.

For each SAE of the recipe (one layer each), and for the residual neurons of the same layer
when ``neuron_baseline`` is on:

1. score every node with the recipe's attribution method (one forward + backward per bucket
   of prompts for attribution patching);
2. rank the nodes (by default: the ablations that lower the metric most come first);
3. verify the top ``top_k`` one by one by real ablation, and the top ``n`` together for every
   ``n`` of a grid up to ``curve_max`` (the metric-vs-ablated-nodes curve);
4. measure the loss on unrelated text with the top nodes ablated.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from steer.errors import SteerError
from steer.pinpoint.ablation import ablated_metrics, clean_metric
from steer.pinpoint.attribution import attribute
from steer.pinpoint.baselines import fit_linear_bases
from steer.pinpoint.methods import ATTRIBUTION_METHODS
from steer.pinpoint.metric import Metric, resolve_metric
from steer.pinpoint.nodes import (
    Basis,
    FeatureBasis,
    NeuronBasis,
    NodeSet,
    build_nodes,
    clean_layer_run,
    make_buckets,
)
from steer.pinpoint.recipe import PinpointRecipe
from steer.pinpoint.side_effects import ablated_loss, clean_text_run, load_windows
from steer.plugins.registry import registry

log = logging.getLogger(__name__)

CORRELATION_TOP = 50


@dataclass
class PinpointResult:
    """Everything ``steer pinpoint`` reports; ``to_dict()`` is its JSON form."""

    model: str
    metric: str
    method: str
    ablation: str
    rank: str
    n_prompts: int
    clean_metric: float
    clean_metric_per_prompt: list[float]
    sites: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metric": self.metric,
            "method": self.method,
            "ablation": self.ablation,
            "rank": self.rank,
            "n_prompts": self.n_prompts,
            "clean_metric": self.clean_metric,
            "clean_metric_per_prompt": self.clean_metric_per_prompt,
            "sites": self.sites,
            "timing": self.timing,
        }


def curve_grid(n_max: int) -> list[int]:
    """Numbers of ablated nodes at which the curve is measured: every n to 10, then coarser."""
    grid = set(range(1, min(n_max, 10) + 1))
    grid |= {n for n in (12, 15, 20, 25, 30, 40, 50, 60, 80, 100) if n <= n_max}
    grid |= set(range(150, n_max + 1, 50))
    grid.add(n_max)
    return sorted(grid)


def rank_nodes(scores: torch.Tensor, rank: str) -> torch.Tensor:
    """Node indices, best first: ``decrease`` (most negative estimated effect first),
    ``increase`` or ``magnitude``."""
    key = {"decrease": scores, "increase": -scores, "magnitude": -scores.abs()}[rank]
    return torch.argsort(key, stable=True)


def correlation(x: torch.Tensor, y: torch.Tensor) -> dict[str, float | int | None]:
    """Pearson and Spearman correlation of two 1-D tensors (``None`` if undefined)."""

    def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
        a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
        denom = float(a.norm() * b.norm())
        return float((a * b).sum()) / denom if denom > 0 else None

    def ranks(a: torch.Tensor) -> torch.Tensor:
        return torch.argsort(torch.argsort(a, stable=True), stable=True).double()

    n = len(x)
    if n < 3:
        return {"n": n, "pearson": None, "spearman": None}
    return {"n": n, "pearson": pearson(x, y), "spearman": pearson(ranks(x), ranks(y))}


class Pinpointer:
    """A pinpoint recipe bound to a loaded model and SAEs; ``run()`` does the work.

    Example::

        from steer.pinpoint import Pinpointer, load_pinpoint_recipe
        result = Pinpointer(load_pinpoint_recipe("recipes/pinpoint-gender.yaml")).run()
        print(result.to_dict()["sites"][0]["features"]["n_for_half"])
    """

    def __init__(self, recipe: PinpointRecipe, *, pm=None, model=None, device=None):
        from steer.model import load_model
        from steer.plugins.manager import get_plugin_manager
        from steer.steering.attach import attach_saes, load_saes
        from steer.steering.remote import check_remote_model, check_remote_sae

        self.recipe = recipe
        self.pm = pm if pm is not None else get_plugin_manager()
        self.method = registry(self.pm, ATTRIBUTION_METHODS).get(
            recipe.method, where="method"
        )  # fail before the slow loads
        self.timing: dict[str, float] = {}
        check_remote_model(recipe)  # before the slow loads, and before anything is sent
        t0 = time.perf_counter()
        saes = load_saes(recipe, pm=self.pm)  # reads only recipe.saes
        for i, spec in enumerate(recipe.saes):
            check_remote_sae(recipe, i, type(saes[spec.id][0]))
        if model is None:
            where = {"remote": recipe.remote} if recipe.remote else {}
            model = load_model(recipe.model, device=device, **where)
        elif recipe.remote and model.remote != recipe.remote:
            model = dataclasses.replace(model, remote=recipe.remote)  # the caller's stays as it is
        self.model = model
        self.saes = residual_layers(attach_saes(saes, self.model, recipe), recipe)
        self.timing["load_s"] = time.perf_counter() - t0
        self.metric: Metric = resolve_metric(recipe, self.model.tokenizer, model=recipe.model)
        self.buckets = make_buckets(
            self.model,
            [p.text for p in recipe.prompts],
            recipe.counterfactuals,
            chat=recipe.chat,
            batch_size=recipe.batch_size,
        )

    def labels(self, index: int) -> dict[int, str]:
        """Feature names from the labels file beside SAE ``index`` ({} when there is none)."""
        try:
            from steer.sae.labels import load_labels
        except ImportError:  # labels support is optional
            return {}
        from steer.sae.sources import resolve_sae_path

        folder = resolve_sae_path(self.recipe.saes[index], where=f"saes[{index}]")
        return {i: lab.name for i, lab in load_labels(folder).items()}

    def run(self, *, progress: bool = False) -> PinpointResult:
        """Attribute, rank, verify and measure side effects for every SAE of the recipe."""
        recipe = self.recipe
        text_windows = None
        if recipe.side_effect_data is not None:
            text_windows = load_windows(
                self.model, recipe.side_effect_data, recipe.side_effect_tokens
            )
        result: PinpointResult | None = None
        for index, spec in enumerate(recipe.saes):
            sae, layer = self.saes[spec.id]
            t0 = time.perf_counter()
            run = clean_layer_run(self.model, layer, self.buckets)
            bases: list[Basis] = [FeatureBasis(sae)]
            if recipe.neuron_baseline:
                bases.append(NeuronBasis(self.model.d_model))
            bases += fit_linear_bases(
                self.model,
                layer,
                list(recipe.baselines),
                data=recipe.baseline_data,
                tokens=recipe.baseline_tokens,
                components=recipe.baseline_components,
            )
            site: dict[str, Any] = {"sae": spec.id, "layer": layer}
            text = (
                clean_text_run(self.model, layer, text_windows)
                if text_windows is not None
                else None
            )
            if text is not None:
                site["side_effect_tokens"] = text.n_tokens
                site["ce_clean"] = text.ce_clean
            for basis in bases:
                nodes = build_nodes(basis, run, recipe.ablation)
                if result is None:
                    per_prompt = clean_metric(self.buckets, nodes, self.metric)
                    result = PinpointResult(
                        model=recipe.model,
                        metric=self.metric.describe(),
                        method=recipe.method,
                        ablation="counterfactual" if recipe.counterfactuals else recipe.ablation,
                        rank=recipe.rank,
                        n_prompts=len(recipe.prompts),
                        clean_metric=float(per_prompt.mean()),
                        clean_metric_per_prompt=[float(v) for v in per_prompt],
                    )
                labels = self.labels(index) if basis.kind == "features" else {}
                site[basis.kind] = self._pinpoint_basis(
                    nodes, result.clean_metric, labels, text, progress=progress
                )
            self.timing[f"{spec.id}_s"] = time.perf_counter() - t0
            result.sites.append(site)
        result.timing = dict(self.timing)
        return result

    def _pinpoint_basis(self, nodes: NodeSet, clean: float, labels, text, *, progress: bool):
        recipe = self.recipe
        basis = nodes.basis
        t0 = time.perf_counter()
        scores, err_score = attribute(
            self.model, self.buckets, nodes, self.metric, self.method, steps=recipe.steps
        )
        t_attr = time.perf_counter() - t0
        order = rank_nodes(scores, recipe.rank)
        top_k = min(recipe.top_k, basis.n)
        curve_max = min(recipe.curve_max or recipe.top_k, basis.n)
        grid = curve_grid(curve_max)
        singles = [order[i : i + 1] for i in range(top_k)]
        sets = singles + [order[:n] for n in grid]
        from tqdm.auto import tqdm

        n_rows = len(sets) * len(recipe.prompts)
        with tqdm(
            total=n_rows, desc=f"verify {basis.kind}", unit="prompt", disable=not progress
        ) as bar:
            t0 = time.perf_counter()
            means = ablated_metrics(
                self.model, self.buckets, nodes, self.metric, sets, on_done=bar.update
            )
            t_verify = time.perf_counter() - t0
        effects = means[:top_k] - clean
        curve = [{"n": 0, "metric": clean}] + [
            {"n": n, "metric": float(m)} for n, m in zip(grid, means[top_k:], strict=True)
        ]
        ranked = [
            {
                "rank": r + 1,
                "node": int(order[r]),
                "label": labels.get(int(order[r])),
                "attribution": float(scores[order[r]]),
                "verified_effect": float(effects[r]),
            }
            for r in range(top_k)
        ]
        n_corr = min(CORRELATION_TOP, top_k)
        out: dict[str, Any] = {
            "n_nodes": basis.n,
            "error_attribution": err_score,
            "attribution_sum": float(scores.sum()),
            "ranked": ranked,
            "order": [int(i) for i in order[: max(top_k, curve_max)]],
            "correlation": correlation(scores[order[:n_corr]], effects[:n_corr]),
            "curve": curve,
            "n_for_half": _n_for_half(curve, clean),
            "timing": {"attribution_s": t_attr, "verify_s": t_verify},
        }
        if text is not None:
            counts = sorted({n for n in (out["n_for_half"], top_k) if n})
            out["side_effects"] = [
                {
                    "n": n,
                    "ce": (
                        ce := ablated_loss(self.model, text, basis, order[:n], nodes.target_mean)
                    ),
                    "delta": ce - text.ce_clean,
                }
                for n in counts
            ]
        return out


def _n_for_half(curve: list[dict[str, float]], clean: float) -> int | None:
    """The smallest measured n whose ablation removes at least half of the clean metric, i.e.
    moves it at least halfway to 0 (or past it); ``None`` if no measured n does."""
    if clean == 0:
        return None
    for point in curve[1:]:
        if point["metric"] / clean <= 0.5:
            return int(point["n"])
    return None


def pinpoint(recipe: PinpointRecipe, **kwargs: Any) -> PinpointResult:
    """``Pinpointer(recipe, **kwargs).run()``."""
    progress = kwargs.pop("progress", False)
    return Pinpointer(recipe, **kwargs).run(progress=progress)


def residual_layers(
    attached: dict[str, tuple[Any, Any]], recipe: Any
) -> dict[str, tuple[Any, int]]:
    """Each SAE with the block whose output it reads: pinpointing patches the residual stream
    after a block, so an SAE elsewhere (an MLP's output, a block's input at the embeddings) is
    a one-line SteerError naming it."""
    out = {}
    for i, spec in enumerate(recipe.saes):
        sae, hook = attached[spec.id]
        layer = hook.layer - 1 if hook.kind == "resid_pre" else hook.layer
        if hook.kind not in ("resid_pre", "resid_post") or layer < 0:
            raise SteerError(
                f"pinpoint patches the residual stream after a block; this SAE reads {hook}",
                where=f"saes[{i}]",
            )
        out[spec.id] = (sae, layer)
    return out
