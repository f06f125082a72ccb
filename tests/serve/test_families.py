"""The server's batching on every model family steer knows (tiny random models of the real
architectures, Gemma's sliding-window layers included): requests joining a batch in flight
generate what `steer run` generates for them alone."""

from __future__ import annotations

import threading

import pytest
from support.families import FAMILIES, one_thread, tiny_family
from support.handmade import orthonormal_sae

from steer.sae import save_sae
from steer.serve.engine import ServeEngine
from steer.serve.jobs import Job
from steer.serve.sampling import Sampling
from steer.serve.steering import SteeringResolver
from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe

PROMPTS = ["The cat sat on the mat and then", "Paris", "Once upon a time there was"]


@pytest.mark.parametrize("family", FAMILIES)
def test_joining_requests_generate_what_steer_run_does(family, tmp_path, pm):
    model = tiny_family(family)
    save_sae(
        orthonormal_sae(d_in=model.d_model, d_sae=16, layer=1, model_name=model.name),
        tmp_path / "s",
    )
    recipe = {
        "model": model.name,
        "saes": [{"id": "s", "path": str(tmp_path / "s")}],
        "prompts": PROMPTS,
        "generation": {"max_new_tokens": 10, "chat": False},
        "interventions": [{"plugin": "clamp", "sae": "s", "features": [2], "value": 3.0}],
    }
    with one_thread():
        steerer = Steerer(parse_recipe(recipe), pm=pm, model=model)
        steps = SteeringResolver(steerer.recipe, steerer.saes, pm).default
        texts, first_started, done = {}, threading.Event(), threading.Semaphore(0)

        def job(i: int) -> Job:
            def emit(update):
                texts[i] = texts.get(i, "") + update.text
                first_started.set()
                if update.finish_reason is not None:
                    done.release()

            return Job(
                model.tokenizer(PROMPTS[i])["input_ids"], Sampling(max_tokens=10), steps, emit
            )

        engine = ServeEngine(steerer).start()
        try:
            engine.submit([job(0)])
            assert first_started.wait(30)  # the others join the first in flight
            engine.submit([job(1), job(2)])
            for _ in PROMPTS:
                assert done.acquire(timeout=30)
        finally:
            engine.stop()
        for i, prompt in enumerate(PROMPTS):
            alone = parse_recipe({**recipe, "prompts": [prompt]})
            assert (
                texts[i]
                == Steerer(alone, pm=pm, model=model).run(baseline=False).results[0].steered
            )
