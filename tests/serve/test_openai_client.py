"""The official openai client against a real server of the tiny model: chat, completions and
streaming, each checked against steer's own engine (`steer run`) token for token."""

from __future__ import annotations

import concurrent.futures

import pytest
import torch
from support.server import base_recipe

from steer.steering.engine import Steerer
from steer.steering.recipe import parse_recipe

PROMPTS = ["The cat sat on", "Paris is", "Once upon a time", "The dog ran", "A small model"]


def clamp(feature: int, value: float = 6.0) -> dict:
    return {"plugin": "clamp", "sae": "s", "features": [feature], "value": value}


def steer_run(tiny_model, pm, sae_dir, prompt: str, **recipe) -> str:
    """What `steer run` generates for one prompt (greedy, 12 tokens, chat template)."""
    data = base_recipe(sae_dir, prompts=[prompt], **recipe)
    return (
        Steerer(parse_recipe(data), pm=pm, model=tiny_model).run(baseline=False).results[0].steered
    )


def chat(client, prompt: str, **kwargs):
    kwargs.setdefault("max_tokens", 12)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": prompt}], **kwargs
    )


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]


def test_chat_equals_steer_run_token_for_token(client, tiny_model, pm, sae_dir):
    for prompt in PROMPTS[:2]:
        response = chat(client, prompt)
        assert response.choices[0].message.content == steer_run(tiny_model, pm, sae_dir, prompt)
        assert response.choices[0].finish_reason == "length"
        assert response.usage.completion_tokens == 12


def test_steered_chat_equals_steered_steer_run(client, tiny_model, pm, sae_dir):
    edit = [clamp(3)]
    response = chat(client, PROMPTS[0], extra_body={"steer": {"interventions": edit}})
    steered = steer_run(tiny_model, pm, sae_dir, PROMPTS[0], interventions=edit)
    assert response.choices[0].message.content == steered
    assert steered != steer_run(tiny_model, pm, sae_dir, PROMPTS[0])  # the edit did something


def test_completions_take_the_raw_prompt(client, tiny_model):
    response = client.completions.create(
        model="tiny-llama", prompt=PROMPTS[1], max_tokens=6, temperature=0, logprobs=2
    )
    enc = tiny_model.tokenizer(PROMPTS[1], return_tensors="pt")
    ids = tiny_model.hf.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=2)
    expected = tiny_model.tokenizer.decode(ids[0, enc["input_ids"].shape[1] :])
    choice = response.choices[0]
    assert choice.text == expected
    assert len(choice.logprobs.tokens) == 6
    # greedy: each chosen token is the most likely one (two alternatives may share a text,
    # which the legacy format's dict keeps once)
    for top, chosen in zip(
        choice.logprobs.top_logprobs, choice.logprobs.token_logprobs, strict=True
    ):
        assert 1 <= len(top) <= 2
        assert max(top.values()) == pytest.approx(chosen)
        assert chosen <= 0


def test_streamed_chat_is_the_same_text(client):
    whole = chat(client, PROMPTS[2]).choices[0].message.content
    chunks = list(chat(client, PROMPTS[2], stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    finished = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finished == ["length"]
    assert chunks[-1].usage.completion_tokens == 12


def test_eight_concurrent_interventions_equal_their_one_by_one_results(client):
    edits = [[clamp(k)] for k in range(8)]

    def ask(k: int) -> str:
        prompt = PROMPTS[k % len(PROMPTS)]
        return (
            chat(client, prompt, extra_body={"steer": {"interventions": edits[k]}})
            .choices[0]
            .message.content
        )

    alone = [ask(k) for k in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert len(set(alone)) > 4  # the eight edits really differ


def test_a_monitor_stop_ends_one_stream_while_another_finishes(client, server):
    # feature 3 clamped high on the first stream and watched there: it fires on the first
    # generated token and stops that completion; the other stream carries no steering.
    steer = {
        "interventions": [{**clamp(3, 9.0), "positions": "generated"}],
        "monitors": [
            {
                "sae": "s",
                "features": [3],
                "threshold": 5.0,
                "positions": "generated",
                "action": "stop",
                "name": "watch3",
            }
        ],
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stopped = pool.submit(
            lambda: list(
                chat(client, PROMPTS[0], stream=True, max_tokens=30, extra_body={"steer": steer})
            )
        )
        plain = pool.submit(lambda: list(chat(client, PROMPTS[1], stream=True, max_tokens=30)))
        stopped, plain = stopped.result(), plain.result()
    events = [e for c in stopped for e in (getattr(c, "steer", None) or {}).get("events", [])]
    assert events and events[0]["group"] == "watch3" and events[0]["action"] == "stop"
    assert events[0]["phase"] == "generated" and events[0]["token_index"] == 0
    reasons = [c.choices[0].finish_reason for c in stopped if c.choices[0].finish_reason]
    assert reasons == ["content_filter"]
    assert [c.choices[0].finish_reason for c in plain if c.choices[0].finish_reason] == ["length"]
    assert sum(1 for c in plain if c.choices[0].delta.content) > 5


def test_a_conditional_intervention_switches_on_from_the_firing_token(
    client, tiny_model, pm, sae_dir
):
    monitor = {
        "sae": "s",
        "features": [3],
        "threshold": -1e9,
        "positions": "generated",
        "name": "always",
        "action": {"plugin": "clamp", "features": [5], "value": 8.0},
    }
    served = chat(client, PROMPTS[3], extra_body={"steer": {"monitors": [monitor]}})
    expected = steer_run(tiny_model, pm, sae_dir, PROMPTS[3], monitors=[monitor])
    assert served.choices[0].message.content == expected
    assert expected != steer_run(tiny_model, pm, sae_dir, PROMPTS[3])
    assert served.steer["events"][0]["action"] == "clamp"


def test_seeded_sampling_repeats_and_n_gives_that_many_choices(client):
    def sample(seed):
        return chat(client, PROMPTS[4], temperature=1.0, seed=seed, n=3, max_tokens=8)

    first, again = sample(7), sample(7)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1  # each choice samples with its own generator


def test_a_stop_string_cuts_the_text_before_it(client):
    full = chat(client, PROMPTS[0], max_tokens=12).choices[0].message.content
    stop = full[4:7]
    assert stop and full.find(stop) == 4
    cut = chat(client, PROMPTS[0], max_tokens=12, stop=[stop]).choices[0]
    assert cut.message.content == full[:4]
    assert cut.finish_reason == "stop"


@pytest.mark.parametrize("replace", [False, True])
def test_served_recipe_steps_apply_unless_replaced(tiny_model, sae_dir, pm, replace):
    from support.server import running

    from steer.serve.state import Limits, build_state

    recipe = parse_recipe(base_recipe(sae_dir, interventions=[clamp(3)]))
    state = build_state(recipe, Limits(), model=tiny_model)
    from openai import OpenAI

    with running(state) as url:
        client = OpenAI(base_url=url, api_key="x", max_retries=0)
        body = {"steer": {"replace": True}} if replace else None
        text = chat(client, PROMPTS[0], extra_body=body).choices[0].message.content
    expected = steer_run(
        tiny_model, pm, sae_dir, PROMPTS[0], **({} if replace else {"interventions": [clamp(3)]})
    )
    assert text == expected


def test_min_tokens_holds_end_of_sequence_back(client, server):
    _, state = server
    first = chat(client, PROMPTS[1], max_tokens=1).choices[0].message.content
    token = state.model.tokenizer(first, add_special_tokens=False)["input_ids"][0]
    saved = state.engine.eos, state.engine._eos_index
    # make the model's own first token an end-of-sequence token: it now ends at once...
    state.engine.eos = saved[0] | {token}
    state.engine._eos_index = torch.tensor(sorted(state.engine.eos))
    try:
        ended = chat(client, PROMPTS[1], max_tokens=8).choices[0]
        held = chat(client, PROMPTS[1], max_tokens=8, extra_body={"min_tokens": 5}).choices[0]
    finally:
        state.engine.eos, state.engine._eos_index = saved
    assert (ended.message.content, ended.finish_reason) == ("", "stop")
    # ...unless min_tokens holds it back
    assert (
        len(state.model.tokenizer(held.message.content, add_special_tokens=False)["input_ids"]) >= 5
    )


def test_features_are_searched_and_named_by_label(client, server, sae_dir, tiny_model, pm):
    import httpx

    from steer.sae.labels import Label, save_labels

    url, _ = server
    written = save_labels(
        sae_dir, {3: Label("harbour", "boats and docks"), 7: Label("bakery", "bread")}
    )
    try:
        found = httpx.get(url + "/steer/features", params={"q": "BOATS"}).json()["data"]
        assert [(f["sae"], f["feature"], f["label"]) for f in found] == [("s", 3, "harbour")]
        assert httpx.get(url + "/steer/features", params={"sae": "nope"}).status_code == 400
        assert httpx.get(url + "/steer/features", params={"limit": 0}).status_code == 400
        by_label = {
            "interventions": [
                {"plugin": "clamp", "sae": "s", "features": ["harbour"], "value": 6.0}
            ]
        }
        text = chat(client, PROMPTS[0], extra_body={"steer": by_label}).choices[0].message.content
        assert text == steer_run(tiny_model, pm, sae_dir, PROMPTS[0], interventions=[clamp(3)])
    finally:
        written.unlink()
