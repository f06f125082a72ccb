"""PCA and ICA baselines for pinpointing: each basis writes back exactly what it reads (so an
edit changes only the directions it names), and a pinpoint run ranks, verifies and reports
them beside the SAE's features."""

from __future__ import annotations

import pytest
import torch
from support.sae_factory import make_sae

from steer.pinpoint import Pinpointer, parse_pinpoint_recipe
from steer.pinpoint.baselines import linear_basis
from steer.pinpoint.report import curve_html
from steer.sae import save_sae

pytest.importorskip("sklearn")

PROMPTS = ["The cat sat on the", "A dog ran in the", "Once upon a time there was a little"]


def run(tiny_model, sae, tmp_path, **overrides):
    save_sae(sae, tmp_path / "sae")
    recipe = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(tmp_path / "sae")}],
        "prompts": PROMPTS,
        "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
        **overrides,
    }
    return Pinpointer(parse_pinpoint_recipe(recipe), model=tiny_model).run().to_dict()


@pytest.mark.parametrize("kind", ["pca", "ica"])
def test_a_complete_basis_reconstructs_the_stream(kind):
    gen = torch.Generator().manual_seed(0)
    # correlated, non-Gaussian data (ICA needs non-Gaussian sources to separate)
    x = torch.rand(2000, 12, generator=gen) ** 3 @ torch.randn(12, 12, generator=gen) + 3.0
    basis = linear_basis(kind, x, 12)
    a = basis.encode(x)
    assert basis.error(x, a).abs().max() < 1e-3  # nothing left out with all 12 directions
    # an edit of one node moves the stream along that node's direction only
    edited = a.clone()
    edited[:, 4] += 1.0
    moved = basis.mean + edited @ basis.directions + basis.error(x, a) - x
    assert torch.allclose(moved, basis.directions[4].expand_as(moved), atol=1e-3)
    assert torch.allclose(basis.encode(x + moved), edited, atol=1e-2)


def test_fewer_directions_leave_the_rest_to_the_error_node():
    x = torch.randn(500, 10, generator=torch.Generator().manual_seed(1))
    basis = linear_basis("pca", x, 3)
    a = basis.encode(x)
    assert a.shape == (500, 3)
    assert torch.allclose(basis.mean + a @ basis.directions + basis.error(x, a), x, atol=1e-5)
    # PCA's first components carry the most variance
    assert a.var(0).tolist() == sorted(a.var(0).tolist(), reverse=True)


def test_pinpoint_ranks_verifies_and_reports_pca_and_ica(tiny_model, tmp_path):
    result = run(
        tiny_model,
        make_sae(d_in=64, d_sae=96, layer=1, seed=3),
        tmp_path,
        neuron_baseline=True,
        baselines=["pca", "ica"],
        baseline_components=16,
        baseline_tokens=1024,
        top_k=4,
    )
    site = result["sites"][0]
    for kind in ("features", "neurons", "pca", "ica"):
        assert len(site[kind]["ranked"]) == 4
        assert site[kind]["curve"][0]["n"] == 0
    assert site["pca"]["error_attribution"] is not None  # 16 of 64 directions: an error node
    html = curve_html(result)
    assert "component" in html and html.count('class="ranked"') == 4
