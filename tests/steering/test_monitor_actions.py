"""Monitors during generation on the tiny model: events at the right token, `stop` ending only
the prompt it fired on, conditional interventions from the firing token on, and the live
event callback.

The SAE is made by hand from the model's own residual stream: feature 0 ("the detector") has
the direction of one chosen token's residual as its encoder column and a bias halfway between
that token's projection and every other token's, so it is on at that token and nowhere else.
Feature 1 is always on (large bias) with a unit encoder/decoder direction, so clamping it can
be read back exactly by a second monitor.
"""

from __future__ import annotations

import math

import pytest
import torch
from support.handmade import blank_standard_sae

from steer.sae import save_sae
from steer.steering.engine import Steerer
from steer.steering.generation import generate_plain
from steer.steering.recipe import parse_recipe

LAYER = 1
PROMPTS = ["The cat sat on the mat", "Paris is"]
N_NEW = 12


def _completion_states(model, prompt: str) -> tuple[list[int], int, torch.Tensor]:
    """Greedy completion ids of ``prompt`` (alone), its prompt length, and the residual stream
    after block LAYER at every position of prompt + completion."""
    recipe = parse_recipe({"prompts": [prompt], "generation": {"max_new_tokens": N_NEW}})
    enc = model.tokenize([prompt], chat=None)
    ids = generate_plain(model, enc, recipe)
    with torch.no_grad():
        out = model.hf(ids, output_hidden_states=True)
    return ids[0].tolist(), enc["input_ids"].shape[1], out.hidden_states[LAYER + 1][0]


def _detector_sae(target: torch.Tensor, others: torch.Tensor, readback: torch.Tensor):
    """Feature 0 is on at the residual ``target`` only (against every row of ``others``);
    feature 1 is always on along the unit vector ``readback``."""
    d_in = target.shape[0]
    direction = target / target.norm()
    on, off = float(target @ direction), float((others @ direction).max())
    assert on - off > 0.2, "the chosen token's residual is not separable from the others"
    sae = blank_standard_sae(d_in=d_in, d_sae=2, layer=LAYER)
    with torch.no_grad():
        sae.W_enc[:, 0] = direction
        sae.b_enc[0] = -(on + off) / 2
        sae.W_enc[:, 1] = readback
        sae.b_enc[1] = 100.0
        sae.W_dec[0] = direction
        sae.W_dec[1] = readback
    return sae, (on - off) / 2


@pytest.fixture(scope="module")
def scene(tiny_model, tmp_path_factory):
    """Prompt 0's generated token 4 is where the detector fires; prompt 1 never fires it."""
    ids0, n0, h0 = _completion_states(tiny_model, PROMPTS[0])
    _, _, h1 = _completion_states(tiny_model, PROMPTS[1])
    fire_at = n0 + 4  # position in prompt 0's sequence
    # Every other position that a forward pass reads (not the last token of each completion).
    others = torch.cat([h0[:fire_at], h0[fire_at + 1 : -1], h1[:-1]])
    gen = torch.Generator().manual_seed(3)
    readback = torch.randn(tiny_model.d_model, generator=gen)
    sae, margin = _detector_sae(h0[fire_at], others, readback / readback.norm())
    path = tmp_path_factory.mktemp("detector") / "sae"
    save_sae(sae, path)
    token = tiny_model.tokenizer.decode([ids0[fire_at]])
    return {"path": str(path), "ids0": ids0, "n0": n0, "token": token, "margin": margin}


def run(tiny_model, pm, scene, monitors, **kwargs):
    recipe = parse_recipe(
        {
            "saes": [{"id": "s", "path": scene["path"]}],
            "prompts": PROMPTS,
            "generation": {"max_new_tokens": N_NEW, "min_new_tokens": N_NEW},
            "monitors": monitors,
        }
    )
    return Steerer(recipe, pm=pm, model=tiny_model).run(**kwargs)


DETECTOR = {"name": "detector", "sae": "s", "features": [0], "threshold": 0.0}


def test_a_log_monitor_fires_at_the_chosen_token_only_and_changes_nothing(tiny_model, pm, scene):
    results = run(tiny_model, pm, scene, [DETECTOR]).results
    (event,) = results[0].events
    assert event["phase"] == "generated" and event["token_index"] == 4
    assert event["token"] == scene["token"]
    assert event["group"] == "detector" and event["feature"] == 0 and event["first"]
    assert 0 < event["activation"] <= scene["margin"] * 1.01
    assert results[1].events == []
    assert results[0].actions == []  # `log` records, it does not act
    for r in results:
        assert r.steered == r.baseline


@pytest.fixture(scope="module")
def prompt_scene(tiny_model, tmp_path_factory):
    """The detector fires on the prompt pass, on prompt 0's second token after the chat
    template's opening (which both prompts share)."""
    ids, _, h = _completion_states(tiny_model, PROMPTS[0])
    ids1, _, h1 = _completion_states(tiny_model, PROMPTS[1])
    at = next(i for i, (a, b) in enumerate(zip(ids, ids1, strict=False)) if a != b) + 1
    others = torch.cat([h[:at], h[at + 1 : -1], h1[:-1]])
    sae, _ = _detector_sae(h[at], others, torch.eye(tiny_model.d_model)[0])
    path = tmp_path_factory.mktemp("prompt-detector") / "sae"
    save_sae(sae, path)
    return {"path": str(path), "at": at, "token": tiny_model.tokenizer.decode([ids[at]])}


def test_an_event_on_the_prompt_pass_names_the_prompt_token(tiny_model, pm, prompt_scene):
    results = run(tiny_model, pm, prompt_scene, [DETECTOR]).results
    (event,) = results[0].events
    assert (event["phase"], event["token_index"]) == ("prompt", prompt_scene["at"])
    assert event["token"] == prompt_scene["token"]


def test_a_response_fired_on_the_prompt_pass_starts_at_that_prompt_token(
    tiny_model, pm, prompt_scene
):
    readback = {"name": "readback", "sae": "s", "features": [1], "threshold": -1e9}
    response = {"plugin": "clamp", "features": [1], "value": 140.0}
    first, other = run(
        tiny_model, pm, prompt_scene, [{**DETECTOR, "action": response}, readback]
    ).results
    clamped = [
        (e["phase"], e["token_index"])
        for e in first.events
        if e["group"] == "readback" and math.isclose(e["activation"], 140.0, abs_tol=1e-3)
    ]
    n_prompt = sum(1 for e in first.events if e["group"] == "readback" and e["phase"] == "prompt")
    expected = [("prompt", i) for i in range(prompt_scene["at"], n_prompt)]
    expected += [("generated", i) for i in range(N_NEW - 1)]
    assert clamped == expected
    assert other.steered == other.baseline


def test_stop_ends_only_the_prompt_it_fired_on(tiny_model, pm, scene):
    results = run(tiny_model, pm, scene, [{**DETECTOR, "action": "stop"}]).results
    stopped, other = results
    # The completion ends with the firing token (generated token 4), despite min_new_tokens.
    kept = scene["ids0"][scene["n0"] : scene["n0"] + 5]
    assert stopped.steered == tiny_model.tokenizer.decode(kept, skip_special_tokens=True)
    assert stopped.baseline.startswith(stopped.steered) and stopped.baseline != stopped.steered
    assert [a["action"] for a in stopped.actions] == ["stop"]
    assert stopped.actions[0]["token_index"] == 4
    # The other prompt in the batch generated to the end, exactly as without the monitor.
    assert other.steered == other.baseline and other.actions == []


def test_a_conditional_intervention_starts_at_the_firing_token(tiny_model, pm, scene):
    readback = {"name": "readback", "sae": "s", "features": [1], "threshold": -1e9}
    response = {"plugin": "clamp", "features": [1], "value": 140.0}
    results = run(tiny_model, pm, scene, [{**DETECTOR, "action": response}, readback]).results
    first, other = results
    # The second monitor reads the residual stream after the first one's response: feature 1
    # is clamped from generated token 4 on, and only there.
    by_token = {
        e["token_index"]: e["activation"]
        for e in first.events
        if e["group"] == "readback" and e["phase"] == "generated"
    }
    assert sorted(by_token) == list(range(N_NEW - 1))
    for index, value in by_token.items():
        assert math.isclose(value, 140.0, abs_tol=1e-3) == (index >= 4), (index, value)
    assert [(a["action"], a["token_index"]) for a in first.actions] == [("clamp", 4)]
    # Tokens up to the firing one are the baseline's; the clamp changes what follows.
    kept = scene["ids0"][scene["n0"] : scene["n0"] + 5]
    assert first.steered.startswith(tiny_model.tokenizer.decode(kept, skip_special_tokens=True))
    assert first.steered != first.baseline
    assert other.steered == other.baseline
    assert not any(math.isclose(e["activation"], 140.0) for e in other.events)


def test_events_reach_the_callback_before_the_next_token(tiny_model, pm, scene):
    seen: list[tuple[int, dict]] = []
    steps: list[int] = []
    run(
        tiny_model,
        pm,
        scene,
        [{**DETECTOR, "threshold": -1e9, "positions": "generated"}],
        on_step=steps.append,
        on_event=lambda e: seen.append((len(steps), e)),
    )
    generated = [(n, e) for n, e in seen if e["prompt"] == 0]
    # Generated token i is read on step i + 1 and reported before step i + 2 begins.
    assert [e["token_index"] for _, e in generated] == list(range(N_NEW - 1))
    assert all(n == e["token_index"] + 2 for n, e in generated)


def test_warn_logs_a_warning_once_per_prompt(tiny_model, pm, scene, caplog):
    with caplog.at_level("WARNING", logger="steer.steering.live"):
        results = run(
            tiny_model, pm, scene, [{**DETECTOR, "threshold": -1e9, "action": "warn"}]
        ).results
    warnings = [r.getMessage() for r in caplog.records if r.name == "steer.steering.live"]
    assert len(warnings) == 2
    assert warnings[0].startswith("monitor detector fired on prompt 0 at prompt token 0")
    assert all(len(r.actions) == 1 and r.actions[0]["action"] == "warn" for r in results)


def test_a_topk_monitor_reads_exact_activations_and_full_encodes_only_flagged_tokens(pm):
    """TopK monitors screen with the features' own encoder columns (an upper bound) and run
    the full encode only on tokens the bound flags; events equal the full encode's."""
    from support.sae_factory import make_sae

    from steer.plugins.registry import registry
    from steer.steering.edit import Readings, edit_site
    from steer.steering.monitors import MONITORS
    from steer.steering.plan import Site, Watch

    sae = make_sae("topk", d_in=64, d_sae=96, k=4, seed=2)
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(0)) * 3
    idx = torch.arange(0, 96, 3)  # 32 watched features
    exact = sae.encode(x)[..., idx].detach()
    threshold = float(exact[exact > 0].median())
    recipe = parse_recipe(
        {
            "saes": [{"id": "s", "path": "unused"}],
            "prompts": ["x"],
            "monitors": [{"sae": "s", "features": idx.tolist(), "threshold": threshold}],
        }
    )
    watch = Watch(
        monitor=registry(pm, MONITORS).get("threshold", where="test"),
        spec=recipe.monitors[0],
        label="g",
        features=idx,
        positions="all",
    )
    encoded_rows: list[int] = []
    full_encode = sae.encode
    sae.encode = lambda h: (encoded_rows.append(h.shape[0]), full_encode(h))[1]
    readings = Readings()
    with torch.no_grad():  # as in the engine (inference mode)
        edit_site(Site("s", sae, 1, watches=[watch]), x, 1, None, readings)
    got = {(e.row, e.position, e.feature, round(e.activation, 4)) for e in readings.events}
    want = {
        (r, p, int(idx[c]), round(float(exact[r, p, c]), 4))
        for r, p, c in (exact > threshold).nonzero().tolist()
    }
    assert got == want and want
    flagged = (torch.relu(sae.pre_acts(x)[..., idx]) > threshold).any(-1).sum()
    assert encoded_rows == [int(flagged)] and flagged < 21
