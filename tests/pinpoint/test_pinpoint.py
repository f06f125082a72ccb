"""Circuit pinpointing on the tiny model with hand-made SAEs whose answers are known."""

from __future__ import annotations

import pytest
import torch
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.pinpoint import Pinpointer, parse_pinpoint_recipe
from steer.pinpoint.attribution import node_gradients
from steer.pinpoint.nodes import NeuronBasis, build_nodes, clean_layer_run
from steer.pinpoint.run import correlation, curve_grid, rank_nodes
from steer.sae import save_sae

LAYER = 1
PROMPTS = [
    "The cat sat on the",
    "A dog ran in the",
    "Once upon a time there was a little",
    "The dog sat on",
    "Paris is the capital of",
]
METRIC = {"logit_diff": {"target": " cat", "foil": " dog"}}
PLANTED = 7


def make_recipe(sae_path, **overrides):
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae_path)}],
        "prompts": PROMPTS,
        "metric": METRIC,
        "top_k": 16,
        "neuron_baseline": False,
    }
    data.update(overrides)
    return parse_pinpoint_recipe(data)


def run(tiny_model, sae, tmp_path, **overrides):
    path = tmp_path / "sae"
    save_sae(sae, path)
    return Pinpointer(make_recipe(path, **overrides), model=tiny_model).run().to_dict()


def residual_gradient(tiny_model, tmp_path) -> torch.Tensor:
    """d(mean metric)/d(residual at LAYER), summed over the positions pinpoint edits."""
    probe = Pinpointer(
        make_recipe(_saved(make_sae(d_in=64, layer=LAYER), tmp_path / "probe")), model=tiny_model
    )
    layer_run = clean_layer_run(tiny_model, LAYER, probe.buckets)
    nodes = build_nodes(NeuronBasis(64), layer_run, "zero")
    grads = node_gradients(tiny_model, probe.buckets, nodes, probe.metric, 0.0)
    return sum(
        (g * m[..., None]).sum(dim=(0, 1)) for g, m in zip(grads.nodes, layer_run.mask, strict=True)
    )


def _saved(sae, path):
    save_sae(sae, path)
    return path


def scaled_sae(scale: float, *, seed: int = 0, zero_b_dec: bool = False):
    sae = make_sae(d_in=64, d_sae=64, layer=LAYER, seed=seed)
    with torch.no_grad():
        sae.W_dec.mul_(scale)
        if zero_b_dec:
            sae.b_dec.zero_()
    return sae


def test_a_planted_feature_is_ranked_first(tiny_model, tmp_path):
    # Every feature's decoder row is tiny except PLANTED's, which points along the gradient of
    # the logit difference and is always on (activation 2): ablating it lowers the metric most.
    g = residual_gradient(tiny_model, tmp_path)
    sae = scaled_sae(0.01)
    with torch.no_grad():
        sae.W_enc[:, PLANTED] = 0.0
        sae.b_enc[PLANTED] = 2.0
        sae.W_dec[PLANTED] = g / g.norm()
    result = run(tiny_model, sae, tmp_path)
    ranked = result["sites"][0]["features"]["ranked"]
    assert ranked[0]["node"] == PLANTED
    assert ranked[0]["attribution"] < 0
    effects = [r["verified_effect"] for r in ranked]
    assert min(effects) == ranked[0]["verified_effect"]
    assert ranked[0]["verified_effect"] < 10 * max(abs(e) for e in effects[1:]) * -1


def test_attribution_matches_exact_ablation_in_the_linear_regime(tiny_model, tmp_path):
    # Small decoder rows: each ablation is a small step, where the first-order estimate holds.
    result = run(tiny_model, scaled_sae(0.003), tmp_path)
    ranked = result["sites"][0]["features"]["ranked"]
    attr = torch.tensor([r["attribution"] for r in ranked])
    exact = torch.tensor([r["verified_effect"] for r in ranked])
    assert exact.abs().max() > 1e-4  # the edits do move the metric
    assert torch.allclose(attr, exact, rtol=0.05, atol=0.02 * float(exact.abs().max()))
    assert result["sites"][0]["features"]["correlation"]["pearson"] > 0.99


def test_integrated_gradients_beat_attribution_patching_on_large_edits(tiny_model, tmp_path):
    # Large decoder rows: ablations leave the linear regime; IG follows the curvature.
    sae = scaled_sae(3.0, seed=2)
    errors = {}
    for method in ("attribution_patching", "integrated_gradients"):
        ranked = run(tiny_model, sae, tmp_path, method=method, steps=16, rank="magnitude")
        rows = ranked["sites"][0]["features"]["ranked"]
        errors[method] = sum(abs(r["attribution"] - r["verified_effect"]) for r in rows) / len(rows)
    assert errors["integrated_gradients"] < 0.5 * errors["attribution_patching"]


def test_features_plus_error_node_add_up_to_the_whole_residual(tiny_model, tmp_path):
    # decode(f) + err == h with b_dec = 0, so by linearity the attributions of all features plus
    # the error node equal the attribution of zeroing every residual neuron.
    result = run(tiny_model, scaled_sae(1.0, zero_b_dec=True), tmp_path, neuron_baseline=True)
    site = result["sites"][0]
    total_features = site["features"]["attribution_sum"] + site["features"]["error_attribution"]
    assert total_features == pytest.approx(site["neurons"]["attribution_sum"], rel=1e-3, abs=1e-4)
    assert site["neurons"]["error_attribution"] is None


def test_the_curve_starts_clean_and_ablation_reduces_the_metric(tiny_model, tmp_path):
    result = run(tiny_model, scaled_sae(1.0), tmp_path, neuron_baseline=True, top_k=10)
    assert result["clean_metric"] == pytest.approx(
        sum(result["clean_metric_per_prompt"]) / len(PROMPTS)
    )
    for kind in ("features", "neurons"):
        curve = result["sites"][0][kind]["curve"]
        assert curve[0] == {"n": 0, "metric": result["clean_metric"]}
        assert [p["n"] for p in curve[1:]] == curve_grid(10)
        # The single top node, ablated alone, is the first point of the curve.
        first = result["sites"][0][kind]["ranked"][0]["verified_effect"] + result["clean_metric"]
        assert curve[1]["metric"] == pytest.approx(first, abs=1e-4)


def test_position_zero_is_never_edited(tiny_model, tmp_path):
    path = _saved(scaled_sae(1.0), tmp_path / "sae")
    probe = Pinpointer(make_recipe(path), model=tiny_model)
    layer_run = clean_layer_run(tiny_model, LAYER, probe.buckets)
    for ablation in ("zero", "mean"):
        nodes = build_nodes(NeuronBasis(64), layer_run, ablation)
        for delta, mask in zip(nodes.delta, layer_run.mask, strict=True):
            assert not mask[:, 0].any()
            assert (delta[:, 0] == 0).all()
            assert (delta[mask] != 0).any()


def test_mean_ablation_moves_kept_positions_to_the_mean(tiny_model, tmp_path):
    path = _saved(scaled_sae(1.0), tmp_path / "sae")
    probe = Pinpointer(make_recipe(path), model=tiny_model)
    layer_run = clean_layer_run(tiny_model, LAYER, probe.buckets)
    nodes = build_nodes(NeuronBasis(64), layer_run, "mean")
    kept = torch.cat([h[m] for h, m in zip(layer_run.hidden, layer_run.mask, strict=True)])
    assert torch.allclose(nodes.target_mean, kept.mean(0))
    for h, d, m in zip(layer_run.hidden, nodes.delta, layer_run.mask, strict=True):
        assert torch.allclose((h + d)[m], kept.mean(0).expand(int(m.sum()), -1), atol=1e-5)


def test_a_counterfactual_equal_to_the_prompt_has_no_effect(tiny_model, tmp_path):
    result = run(tiny_model, scaled_sae(1.0), tmp_path, counterfactuals=PROMPTS, top_k=5)
    assert result["ablation"] == "counterfactual"
    for row in result["sites"][0]["features"]["ranked"]:
        assert row["attribution"] == 0.0
        assert row["verified_effect"] == pytest.approx(0.0, abs=1e-5)


def test_counterfactual_patching_is_estimated_by_attribution(tiny_model, tmp_path):
    # Patch each neuron towards its value on a prompt with cat and dog swapped.
    cfs = [
        "The dog sat on the",
        "A cat ran in the",
        "Once upon a time there was a little",
        "The cat sat on",
        "Paris is the capital of",
    ]
    result = run(
        tiny_model,
        scaled_sae(1.0),
        tmp_path,
        counterfactuals=cfs,
        neuron_baseline=True,
        top_k=64,
        rank="magnitude",
    )
    ranked = result["sites"][0]["neurons"]["ranked"]
    attr = torch.tensor([r["attribution"] for r in ranked])
    exact = torch.tensor([r["verified_effect"] for r in ranked])
    assert exact.abs().max() > 1e-3
    assert correlation(attr, exact)["pearson"] > 0.8


def test_counterfactuals_must_have_their_prompts_token_count(tiny_model, tmp_path):
    cfs = [*PROMPTS[:-1], "Paris is the capital city of France and"]
    with pytest.raises(SteerError, match=r"counterfactuals\[4\] is \d+ tokens but prompts\[4\] is"):
        run(tiny_model, scaled_sae(1.0), tmp_path, counterfactuals=cfs)


def test_rank_orders():
    scores = torch.tensor([0.5, -2.0, 1.0, -0.1])
    assert rank_nodes(scores, "decrease").tolist() == [1, 3, 0, 2]
    assert rank_nodes(scores, "increase").tolist() == [2, 0, 3, 1]
    assert rank_nodes(scores, "magnitude").tolist() == [1, 2, 0, 3]


def test_correlation():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert correlation(x, 2 * x + 1)["pearson"] == pytest.approx(1.0)
    assert correlation(x, -(x**3))["spearman"] == pytest.approx(-1.0)
    assert correlation(x, torch.ones(4))["pearson"] is None
    assert correlation(x[:2], x[:2])["pearson"] is None


def test_curve_grid():
    assert curve_grid(5) == [1, 2, 3, 4, 5]
    grid = curve_grid(230)
    assert grid[:10] == list(range(1, 11))
    assert {12, 20, 50, 100, 150, 200, 230} <= set(grid)
    assert grid == sorted(set(grid))


def test_several_saes_are_pinpointed_at_their_own_layers(tiny_model, tmp_path):
    paths = {
        layer: _saved(make_sae(d_in=64, d_sae=32, layer=layer, seed=layer), tmp_path / f"l{layer}")
        for layer in (0, 2)
    }
    data = {
        "model": "tiny",
        "saes": [{"id": f"l{layer}", "path": str(path)} for layer, path in paths.items()],
        "prompts": PROMPTS,
        "metric": METRIC,
        "top_k": 4,
        "neuron_baseline": False,
    }
    result = Pinpointer(parse_pinpoint_recipe(data), model=tiny_model).run().to_dict()
    assert [(s["sae"], s["layer"]) for s in result["sites"]] == [("l0", 0), ("l2", 2)]
    first, second = (s["features"] for s in result["sites"])
    assert first["n_nodes"] == second["n_nodes"] == 32
    # Different layers, different SAEs: the verified effects differ.
    assert [r["verified_effect"] for r in first["ranked"]] != [
        r["verified_effect"] for r in second["ranked"]
    ]
