"""Iteration-level batching: requests join a batch in flight and leave it the moment they end,
and none of that changes any request's tokens."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from steer.serve.batch import left_padded
from steer.serve.jobs import Job
from steer.serve.sampling import Sampling
from steer.serve.steering import RequestSteering

PROMPTS = ["The cat sat on the mat", "Paris is", "Once upon a time there was a little girl who"]


class Collector:
    """A job's updates, and events when it has produced ``after`` tokens and when it ends."""

    def __init__(self, after: int = 0):
        self.updates, self.after = [], after
        self.started, self.done = threading.Event(), threading.Event()
        self.finished_at = None

    def __call__(self, update):
        self.updates.append(update)
        if (
            update.token is not None
            and sum(u.token is not None for u in self.updates) >= self.after
        ):
            self.started.set()
        if update.finish_reason is not None:
            self.finished_at = time.monotonic()
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [u.token for u in self.updates if u.token is not None]


def job(state, tiny_model, prompt, max_tokens, steer, emit) -> Job:
    ids = tiny_model.tokenizer(tiny_model.format_prompt(prompt, None), add_special_tokens=False)[
        "input_ids"
    ]
    steps = state.resolver.resolve(RequestSteering.model_validate(steer) if steer else None)
    return Job(ids, Sampling(max_tokens=max_tokens), steps, emit)


def alone(state, tiny_model, prompt, max_tokens, steer=None) -> list[int]:
    done = Collector()
    state.engine.submit([job(state, tiny_model, prompt, max_tokens, steer, done)])
    assert done.done.wait(30)
    return done.tokens


def clamp(feature):
    return {"interventions": [{"plugin": "clamp", "sae": "s", "features": [feature], "value": 6.0}]}


def test_rows_joining_mid_flight_and_leaving_early_keep_their_tokens(server, tiny_model):
    _, state = server
    plan = [(PROMPTS[0], 20, clamp(1)), (PROMPTS[1], 6, None), (PROMPTS[2], 14, clamp(2))]
    expected = [alone(state, tiny_model, *p) for p in plan]
    # A starts; B joins after A's 4th token (a shorter prompt: padded under A's longer cache)
    # and leaves first; C joins after B's 2nd token with the longest prompt (A and B padded).
    a, b, c = Collector(after=4), Collector(after=2), Collector()
    state.engine.submit([job(state, tiny_model, *plan[0], a)])
    assert a.started.wait(30)
    state.engine.submit([job(state, tiny_model, *plan[1], b)])
    assert b.started.wait(30)
    state.engine.submit([job(state, tiny_model, *plan[2], c)])
    for done in (a, b, c):
        assert done.done.wait(30)
    assert [a.tokens, b.tokens, c.tokens] == expected
    assert b.finished_at < a.finished_at


def test_a_short_request_arriving_during_a_long_one_finishes_first(server):
    url, _ = server
    body = {"messages": [{"role": "user", "content": "Once upon a time"}], "temperature": 0}
    finished = {}
    with httpx.stream(
        "POST", url + "/chat/completions", json={**body, "max_tokens": 60, "stream": True}
    ) as long:
        lines = long.iter_lines()
        for line in lines:
            if '"content": "' in line and '"content": ""' not in line:
                break  # the long one is generating
        short = httpx.post(url + "/chat/completions", json={**body, "max_tokens": 3}, timeout=30)
        finished["short"] = time.monotonic()
        for _ in lines:
            pass
        finished["long"] = time.monotonic()
    assert short.status_code == 200
    assert finished["short"] < finished["long"]


def test_a_client_that_disconnects_frees_its_row(server):
    url, state = server
    body = {"messages": [{"role": "user", "content": "Paris is"}], "max_tokens": 64, "stream": True}
    before = state.engine.stats["tokens"]
    with httpx.stream("POST", url + "/chat/completions", json=body) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 10
    while state.engine.load()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.engine.load()["running"] == 0
    assert state.engine.stats["tokens"] - before < 64  # it left before generating everything


def test_left_padding_puts_every_row_on_the_right():
    ids, mask = left_padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_seeded_request_samples_the_same_tokens_in_any_batch(server, tiny_model, seed):
    _, state = server
    sampling = Sampling(max_tokens=10, temperature=1.0, seed=seed)

    def run(with_company: bool) -> list[int]:
        mine, other = Collector(), Collector()
        ids = tiny_model.tokenizer("Paris is")["input_ids"]
        jobs = [Job(ids, sampling, state.resolver.default, mine)]
        if with_company:
            jobs.append(
                Job(
                    tiny_model.tokenizer("The dog")["input_ids"],
                    sampling,
                    state.resolver.default,
                    other,
                )
            )
        state.engine.submit(jobs)
        assert mine.done.wait(30)
        return mine.tokens

    assert run(False) == run(True)
    assert torch.tensor(run(False)).unique().numel() > 1


def test_a_request_past_its_deadline_ends_with_timeout(server, tiny_model):
    _, state = server
    done = Collector()
    ids = tiny_model.tokenizer("Paris is")["input_ids"]
    late = Job(
        ids, Sampling(max_tokens=50), state.resolver.default, done, deadline=time.monotonic() - 1
    )
    state.engine.submit([late])
    assert done.done.wait(10)
    assert done.updates[-1].finish_reason == "timeout" and done.tokens == []
