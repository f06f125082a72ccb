"""The engine on the tiny model: exactness of no-op runs, edits on every step, batching."""

from __future__ import annotations

import math

import pytest
import torch
from support.cli_helpers import RESULT_KEYS
from support.handmade import orthonormal_sae
from support.sae_factory import make_sae

from steer.model.sites import Hook
from steer.sae import save_sae
from steer.steering.engine import Steerer
from steer.steering.generation import generate_plain
from steer.steering.recipe import parse_recipe

PROMPTS = ["The cat sat on the mat", "Paris is", "Once upon a time there was a little girl who"]


@pytest.fixture
def sae_dir(tmp_path, tiny_model):
    path = tmp_path / "sae"
    save_sae(make_sae(d_in=tiny_model.d_model, d_sae=96, layer=2, seed=1), path)
    return path


@pytest.fixture
def ortho_dir(tmp_path, tiny_model):
    path = tmp_path / "ortho"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=32, layer=1), path)
    return path


def steer(tiny_model, pm, **recipe):
    recipe.setdefault("prompts", PROMPTS)
    recipe.setdefault("generation", {"max_new_tokens": 12})
    return Steerer(parse_recipe(recipe), pm=pm, model=tiny_model).run()


def test_no_interventions_is_token_for_token_the_plain_model(tiny_model, pm):
    results = steer(tiny_model, pm)
    for r in results.results:
        assert r.steered == r.baseline
    # and the baseline really is plain transformers generate
    recipe = parse_recipe({"prompts": PROMPTS[:1], "generation": {"max_new_tokens": 12}})
    enc = tiny_model.tokenize(PROMPTS[:1], chat=None)
    ids = generate_plain(tiny_model, enc, recipe)
    plain = tiny_model.tokenizer.decode(
        ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert results.results[0].baseline == plain


@pytest.mark.parametrize(("plugin", "value"), [("scale", 1.0), ("add", 0.0)])
def test_sae_attached_with_no_edit_changes_nothing(tiny_model, pm, sae_dir, plugin, value):
    results = steer(
        tiny_model,
        pm,
        saes=[{"id": "s", "path": str(sae_dir)}],
        interventions=[{"plugin": plugin, "sae": "s", "features": list(range(96)), "value": value}],
    )
    for r in results.results:
        assert r.steered == r.baseline


def test_clamp_changes_the_output(tiny_model, pm, ortho_dir):
    results = steer(
        tiny_model,
        pm,
        saes=[{"id": "s", "path": str(ortho_dir)}],
        interventions=[{"plugin": "clamp", "sae": "s", "features": [3], "value": 40.0}],
    )
    assert any(r.steered != r.baseline for r in results.results)


def _readback(tiny_model, pm, ortho_dir, positions, value=7.5):
    """Clamp feature 3, and watch it with a monitor that reads the residual stream after the
    edit on every step (threshold -inf: an event on every token)."""
    return steer(
        tiny_model,
        pm,
        saes=[{"id": "s", "path": str(ortho_dir)}],
        interventions=[
            {"plugin": "clamp", "sae": "s", "features": [3], "value": value, "positions": positions}
        ],
        monitors=[{"sae": "s", "features": [3], "threshold": -1e9}],
        generation={"max_new_tokens": 12, "min_new_tokens": 12},
    )


def test_clamp_holds_on_every_decode_step(tiny_model, pm, ortho_dir):
    results = _readback(tiny_model, pm, ortho_dir, "all")
    for r in results.results:
        generated = [e for e in r.events if e["phase"] == "generated"]
        prompt = [e for e in r.events if e["phase"] == "prompt"]
        # 12 tokens are generated; each but the last (which no forward pass ever reads) is
        # read back after the edit on its own decode step.
        assert [e["token_index"] for e in generated] == list(range(11))
        assert prompt, "the prompt pass is edited too"
        for e in r.events:
            assert math.isclose(e["activation"], 7.5, abs_tol=1e-3), e


def test_positions_prompt_edits_only_the_prompt_pass(tiny_model, pm, ortho_dir):
    results = _readback(tiny_model, pm, ortho_dir, "prompt")
    for r in results.results:
        prompt = [e for e in r.events if e["phase"] == "prompt"]
        generated = [e for e in r.events if e["phase"] == "generated"]
        assert all(math.isclose(e["activation"], 7.5, abs_tol=1e-3) for e in prompt)
        assert not all(math.isclose(e["activation"], 7.5, abs_tol=1e-3) for e in generated)


def test_positions_generated_leaves_the_prompt_alone(tiny_model, pm, ortho_dir):
    results = _readback(tiny_model, pm, ortho_dir, "generated")
    for r in results.results:
        prompt = [e for e in r.events if e["phase"] == "prompt"]
        generated = [e for e in r.events if e["phase"] == "generated"]
        assert not all(math.isclose(e["activation"], 7.5, abs_tol=1e-3) for e in prompt)
        assert all(math.isclose(e["activation"], 7.5, abs_tol=1e-3) for e in generated)


def test_monitor_events_skip_padding_and_name_tokens(tiny_model, pm, ortho_dir):
    results = _readback(tiny_model, pm, ortho_dir, "all")
    lengths = [len(tiny_model.tokenize([p], chat=None)["input_ids"][0]) for p in PROMPTS]
    for r, n_prompt in zip(results.results, lengths, strict=True):
        prompt = [e for e in r.events if e["phase"] == "prompt"]
        assert [e["token_index"] for e in prompt] == list(range(n_prompt))
        assert all(isinstance(e["token"], str) for e in r.events)


def test_batch_with_per_prompt_interventions_equals_each_prompt_alone(tiny_model, pm, ortho_dir):
    saes = [{"id": "s", "path": str(ortho_dir)}]
    prompts = [
        {
            "text": PROMPTS[0],
            "interventions": [{"plugin": "clamp", "sae": "s", "features": [1], "value": 30.0}],
        },
        {
            "text": PROMPTS[1],
            "interventions": [{"plugin": "ablate", "sae": "s", "features": [2, 5]}],
        },
        {
            "text": PROMPTS[2],
            "interventions": [{"plugin": "add", "sae": "s", "features": [7], "value": -25.0}],
        },
        {"text": PROMPTS[0]},
    ]
    together = steer(tiny_model, pm, saes=saes, prompts=prompts).results
    for prompt, batched in zip(prompts, together, strict=True):
        alone = steer(tiny_model, pm, saes=saes, prompts=[prompt]).results[0]
        assert batched.steered == alone.steered
        assert batched.baseline == alone.baseline
    assert together[0].steered != together[3].steered  # same text, different intervention


def test_interventions_on_two_layers_and_two_saes(tiny_model, pm, sae_dir, ortho_dir):
    results = steer(
        tiny_model,
        pm,
        saes=[{"id": "late", "path": str(sae_dir)}, {"id": "early", "path": str(ortho_dir)}],
        interventions=[
            {"plugin": "clamp", "sae": "late", "features": [0], "value": 20.0},
            {"plugin": "clamp", "sae": "early", "features": [3], "value": 7.5},
        ],
        monitors=[{"sae": "early", "features": [3], "threshold": -1e9}],
    )
    for r in results.results:
        assert r.events and all(math.isclose(e["activation"], 7.5, abs_tol=1e-3) for e in r.events)


def test_sampling_is_reproducible_with_a_seed(tiny_model, pm):
    gen = {"max_new_tokens": 10, "temperature": 1.0, "seed": 3}
    first = steer(tiny_model, pm, generation=gen).results
    second = steer(tiny_model, pm, generation=gen).results
    assert [r.steered for r in first] == [r.steered for r in second]
    assert [r.steered for r in first] == [r.baseline for r in first]


def test_timing_and_json_shape(tiny_model, pm):
    results = steer(tiny_model, pm)
    data = results.to_dict()
    assert set(data) == {"results", "timing"}
    assert set(data["results"][0]) == RESULT_KEYS
    assert data["timing"]["new_tokens"] > 0
    assert data["timing"]["steered_s"] > 0


def test_edit_writes_back_only_the_change_through_the_decoder(tiny_model):
    """The write-back is x + (f_new - f_old) @ W_dec: the SAE's error term is kept."""
    from steer_plugins.clamp import clamp

    from steer.steering.edit import Readings, edit_site
    from steer.steering.plan import Operation, Site

    sae = make_sae(d_in=tiny_model.d_model, d_sae=96, layer=2, seed=4)
    feats = torch.tensor([5, 9])
    site = Site(
        sae_id="s",
        sae=sae,
        hook=Hook.at("resid_post", 2),
        features=feats,
        decoder=sae.decoder_rows(feats).detach(),
    )
    site.operations.append(Operation("clamp", clamp, 3.0, torch.tensor([0, 1]), None, "all"))
    x = torch.randn(2, 4, tiny_model.d_model) * 3
    new = edit_site(site, x, step=1, valid=None, readings=Readings())
    with torch.no_grad():
        f = sae.encode(x)
        expected = x + (3.0 - f[..., feats]) @ sae.W_dec[feats]
    torch.testing.assert_close(new, expected)


@pytest.mark.parametrize(
    ("sae_kwargs", "recipe_layer", "message"),
    [
        (
            {"d_in": 32, "layer": 1},
            None,
            "saes[0]: SAE d_in is 32 but the model's residual stream is 64",
        ),
        (
            {"d_in": 64, "layer": 9},
            None,
            "saes[0]: the SAE's layer 9 is out of range (the model has 4 layers)",
        ),
        (
            {"d_in": 64, "layer": 1},
            3,
            "saes[0].layer: layer 3 does not match the SAE, trained on layer 1",
        ),
    ],
)
def test_an_sae_that_does_not_fit_the_model_is_refused(
    tiny_model, pm, tmp_path, sae_kwargs, recipe_layer, message
):
    from steer.errors import SteerError

    save_sae(make_sae(d_sae=16, **sae_kwargs), tmp_path / "sae")
    spec = {"id": "s", "path": str(tmp_path / "sae")}
    if recipe_layer is not None:
        spec["layer"] = recipe_layer
    with pytest.raises(SteerError) as info:
        Steerer(parse_recipe({"saes": [spec], "prompts": ["hi"]}), pm=pm, model=tiny_model)
    assert str(info.value) == message


def test_a_plugin_returning_the_wrong_shape_is_reported(tiny_model, ortho_dir):
    from steer.errors import SteerError
    from steer.plugins.hookspecs import hookimpl
    from steer.plugins.manager import get_plugin_manager
    from steer.steering.interventions import InterventionType

    class Sloppy:
        @hookimpl
        def steer_register_interventions(self, register):
            register(InterventionType("sloppy", lambda acts, value: acts.sum()))

    pm = get_plugin_manager()
    pm.register(Sloppy(), name="sloppy")
    with pytest.raises(
        SteerError, match="intervention 'sloppy' returned \\(\\) for activations of shape"
    ):
        steer(
            tiny_model,
            pm,
            saes=[{"id": "s", "path": str(ortho_dir)}],
            interventions=[{"plugin": "sloppy", "sae": "s", "features": [1]}],
        )


def test_features_named_by_label_steer_like_their_ids(tiny_model, pm, ortho_dir):
    from steer.sae.labels import Label, save_labels

    save_labels(ortho_dir, {3: Label("three"), 5: Label("five")})
    common = {"saes": [{"id": "s", "path": str(ortho_dir)}], "prompts": PROMPTS[:2]}
    by_id = steer(
        tiny_model,
        pm,
        **common,
        interventions=[{"plugin": "clamp", "sae": "s", "features": [3], "value": 40.0}],
        monitors=[{"sae": "s", "features": [5], "threshold": -1e9, "positions": "generated"}],
    )
    by_label = steer(
        tiny_model,
        pm,
        **common,
        interventions=[{"plugin": "clamp", "sae": "s", "features": ["THREE"], "value": 40.0}],
        monitors=[{"sae": "s", "features": ["five"], "threshold": -1e9, "positions": "generated"}],
    )
    assert any(r.steered != r.baseline for r in by_label.results)
    assert [r.steered for r in by_label.results] == [r.steered for r in by_id.results]
    assert [r.events for r in by_label.results] == [r.events for r in by_id.results]
    assert {e["feature"] for r in by_label.results for e in r.events} == {5}


def test_steerer_keeps_the_recipe_with_ids(tiny_model, pm, ortho_dir):
    from steer.sae.labels import Label, save_labels

    save_labels(ortho_dir, {3: Label("three")})
    recipe = parse_recipe(
        {
            "saes": [{"id": "s", "path": str(ortho_dir)}],
            "prompts": ["Paris is"],
            "interventions": [{"plugin": "add", "sae": "s", "features": ["three"], "value": 1.0}],
        }
    )
    assert Steerer(recipe, pm=pm, model=tiny_model).recipe.interventions[0].features == [3]


def test_progress_is_reported_without_any_edit(tiny_model):
    """A run with nothing to edit still reports every step (the CLI's progress bar), and ends:
    a traced step loop that touches no block would wait forever for the model to advance."""
    import threading

    recipe = parse_recipe(
        {"prompts": ["hi", "The cat"], "generation": {"max_new_tokens": 4, "min_new_tokens": 4}}
    )
    steerer = Steerer(recipe, model=tiny_model)
    steps: list[int] = []
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(steerer.run(baseline=False, on_step=steps.append)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60)
    assert done, "the run did not end"
    assert steps == [0, 1, 2, 3]


def test_baseline_steps_are_reported_and_do_not_change_the_baseline(tiny_model):
    """The baseline pass reports its steps (its own progress bar), batch by batch, and counting
    them leaves its completions as plain ``generate`` makes them."""
    gen = {"max_new_tokens": 3, "min_new_tokens": 3, "batch_size": 2}
    recipe = parse_recipe({"prompts": ["hi", "The cat", "A dog"], "generation": gen})
    steerer = Steerer(recipe, model=tiny_model)
    base_steps: list[int] = []
    steered_steps: list[int] = []
    counted = steerer.run(on_baseline_step=base_steps.append, on_step=steered_steps.append)
    assert base_steps == [0, 1, 2] * 2  # two batches
    assert steered_steps == [0, 1, 2] * 2
    plain = steerer.run()
    assert [r.baseline for r in counted.results] == [r.baseline for r in plain.results]


def test_a_prompt_longer_than_the_context_is_refused_before_generating(tiny_model):
    from steer.errors import SteerError

    context = tiny_model.hf.config.max_position_embeddings
    recipe = parse_recipe(
        {"prompts": ["hi", "word " * context], "generation": {"max_new_tokens": 4}}
    )
    with pytest.raises(
        SteerError,
        match=rf"prompts\[1\]: \d+ tokens, plus max_new_tokens 4, "
        rf"exceed the model's context of {context} tokens",
    ):
        Steerer(recipe, model=tiny_model)
    fits = parse_recipe({"prompts": ["hi"], "generation": {"max_new_tokens": context - 32}})
    Steerer(fits, model=tiny_model)  # a prompt that fits with its new tokens is fine
