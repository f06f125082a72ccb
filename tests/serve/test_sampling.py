"""Token choice and streamed text: greedy, seeded sampling, top-p, stop strings held back
until they are settled, partial UTF-8 characters."""

from __future__ import annotations

import torch

from steer.serve.sampling import Sampling, TextStream, choose


def test_greedy_takes_the_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9])
    assert choose(logits, Sampling(max_tokens=1), None) == 1


def test_a_seeded_generator_repeats_its_choices():
    sampling = Sampling(max_tokens=1, temperature=1.0, seed=3)
    logits = torch.zeros(50)
    draws = [
        [choose(logits, sampling, g) for _ in range(20)]
        for g in (sampling.generator(), sampling.generator())
    ]
    assert draws[0] == draws[1] and len(set(draws[0])) > 5
    assert draws[0] != [choose(logits, sampling, sampling.generator(1)) for _ in range(20)]


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two (0.5 < 0.7 <= 0.8)
    logits = torch.tensor([0.5, 0.3, 0.2]).log()
    sampling = Sampling(max_tokens=1, temperature=1.0, top_p=0.7, seed=0)
    generator = sampling.generator()
    drawn = {choose(logits, sampling, generator) for _ in range(300)}
    assert drawn == {0, 1}


def pieces(tokens: dict[int, str]):
    return lambda ids: "".join(tokens[i] for i in ids)


def test_text_near_a_possible_stop_string_is_held_back_then_released():
    stream = TextStream(pieces({1: "Hello", 2: " wor", 3: "ld", 4: " E", 5: "ND"}), stop=("END",))
    # the last len("END") - 1 characters wait: they could be the start of "END"
    assert stream.push(1) == "Hel"
    assert stream.push(2) == "lo w"
    assert stream.push(3) == "or"
    assert stream.push(4) == "ld"
    assert stream.push(5) == " "
    assert stream.stopped and stream.text == "Hello world "


def test_everything_is_flushed_at_the_end_without_stops():
    stream = TextStream(pieces({1: "a", 2: "b"}), stop=("xyz",))
    sent = stream.push(1) + stream.push(2)
    assert sent + stream.flush() == "ab"


def test_a_partial_utf8_character_waits_for_its_end():
    stream = TextStream(pieces({1: "caf", 2: "\ufffd", 3: "é"}))
    assert stream.push(1) == "caf"
    stream.decode = lambda ids: {2: "caf\ufffd", 3: "café"}[len(ids)]
    assert stream.push(2) == ""
    assert stream.push(3) == "é"
