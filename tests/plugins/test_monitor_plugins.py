"""A third-party monitor, installed with pip, is what scores its groups everywhere: live during
``steer run`` (events, the report) and in ``steer monitor score``; its own settings are
checked like any recipe key. The monitor fires inside a band of activations, which no
threshold can imitate."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from support.cli_helpers import assert_one_line_error, call
from support.handmade import orthonormal_sae
from support.plugin_project import install_plugin

from steer.features.encode import encode_texts
from steer.sae import save_sae

BAND_PLUGIN = """
from pydantic import BaseModel, ConfigDict

from steer import MonitorType, hookimpl


class BandSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    low: float
    high: float


def in_band(acts, spec):
    return (acts >= spec.low) & (acts <= spec.high)


@hookimpl
def steer_register_monitors(register):
    register(MonitorType("band", in_band, "an event where low <= activation <= high",
                         settings=BandSettings))
"""
FEATURES = list(range(8))
PROMPTS = ["The cat sat on the mat", "Paris is the capital of"]


@pytest.fixture
def band(tmp_path, monkeypatch):
    return install_plugin(tmp_path, monkeypatch, "bandplugin", BAND_PLUGIN)


@pytest.fixture
def sae_path(tmp_path, tiny_model):
    path = tmp_path / "sae"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=8, layer=1), path)
    return path


def recipe(tmp_path, sae_path, monitor: dict, name: str = "recipe.yaml"):
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae_path)}],
        "prompts": PROMPTS,
        "generation": {"max_new_tokens": 5, "min_new_tokens": 5},
        "monitors": [{"name": "g", "sae": "s", "features": FEATURES, **monitor}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run_events(path, capsys, *extra) -> list[dict]:
    code, out, err = call(["run", str(path), "--no-baseline", "--json", *extra], capsys)
    assert code == 0, err
    return [e for r in json.loads(out)["results"] for e in r["events"]]


def key(event: dict) -> tuple:
    return (event["prompt"], event["phase"], event["token_index"], event["feature"])


def band_between(values: list[float]) -> tuple[float, float]:
    """A band around the middle of ``values`` whose edges fall between two of them."""
    ordered = sorted(set(values))
    lo, hi = len(ordered) // 3, 2 * len(ordered) // 3
    return (ordered[lo - 1] + ordered[lo]) / 2, (ordered[hi] + ordered[hi + 1]) / 2


def test_steer_run_reports_what_the_band_monitor_observes(
    band, tiny_everywhere, tmp_path, sae_path, capsys
):
    every = run_events(recipe(tmp_path, sae_path, {"threshold": -1.0}, "all.yaml"), capsys)
    low, high = band_between([e["activation"] for e in every])
    report = tmp_path / "report.html"
    events = run_events(
        recipe(tmp_path, sae_path, {"plugin": "band", "low": low, "high": high}),
        capsys,
        "--report",
        str(report),
    )
    want = {key(e) for e in every if low <= e["activation"] <= high}
    assert {key(e) for e in events} == want
    assert want and len(want) < len(every)  # the band keeps some events and drops others
    assert any(e["activation"] > high for e in every)  # so no threshold gives the same set
    assert {e["monitor"] for e in events} == {"band"}
    page = report.read_text()
    assert f"band low {low:g}, high {high:g}" in page  # the group table names the monitor
    # Outlined tokens (the legend's sample has no data-pos): exactly where the band fired.
    assert page.count('class="t over" data-pos') == len({k[:3] for k in want})


def test_steer_monitor_score_uses_the_band_monitor(
    band, tiny_everywhere, tiny_model, tmp_path, sae_path, capsys
):
    texts = ["A dog ran in the park.", "Numbers 1 2 3 4.", "The sun is hot.", "Paris."]
    input_path = tmp_path / "texts.txt"
    input_path.write_text("\n".join(texts) + "\n")
    from steer.sae import load_sae

    sae = load_sae(sae_path)
    kept = [e.acts[e.keep] for e in encode_texts(tiny_model, sae, texts, features=FEATURES)]
    flat = torch.cat(kept).flatten().tolist()
    low, high = band_between([v for v in flat if v > 0])
    path = recipe(tmp_path, sae_path, {"plugin": "band", "low": low, "high": high})
    code, out, err = call(["monitor", "score", str(path), "-i", str(input_path), "--json"], capsys)
    assert code in (0, None), err
    payload = json.loads(out)
    fired = [t["fired"]["g"] for t in payload["texts"]]
    want = [bool(((a >= low) & (a <= high)).any()) for a in kept]
    assert fired == want
    scores = [t["scores"]["g"] for t in payload["texts"]]
    assert scores == pytest.approx([float(a.max()) for a in kept], rel=1e-5)
    assert payload["groups"][0]["monitor"] == "band"
    assert (payload["groups"][0]["low"], payload["groups"][0]["high"]) == (low, high)


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        ({"low": 0.0}, ["monitors[0].high", "required field is missing"]),
        ({"low": 0.0, "high": "x"}, ["monitors[0].high", "valid number"]),
        (
            {"low": 0.0, "high": 1.0, "threshold": 2.0},
            ["monitors[0].threshold", "unknown key (monitor 'band' takes: low, high)"],
        ),
    ],
)
def test_the_band_monitor_settings_are_checked_before_loading(
    band, tmp_path, sae_path, capsys, settings, fragments
):
    path = recipe(tmp_path, sae_path, {"plugin": "band", **settings})
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, *fragments)


def test_a_threshold_monitor_refuses_another_monitors_setting(tmp_path, sae_path, capsys):
    path = recipe(tmp_path, sae_path, {"threshold": 1.0, "low": 0.0})
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, "monitors[0].low", "takes: threshold")
