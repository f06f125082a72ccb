"""Choosing each request's next token on its own terms (greedy or temperature/top-p with its
own seeded generator, so a seeded request samples the same tokens whatever else is in the
batch), its log-probabilities, and its text as it streams (stop strings, partial UTF-8)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Sampling:
    """How one completion is generated."""

    max_tokens: int
    min_tokens: int = 0  # end-of-sequence is suppressed before this many (vLLM's min_tokens)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0

    def generator(self, offset: int = 0) -> torch.Generator | None:
        """A generator for a sampled completion (``seed + offset``, or a fresh random seed);
        ``None`` for greedy decoding."""
        if self.temperature == 0:
            return None
        seed = self.seed + offset if self.seed is not None else int.from_bytes(os.urandom(7))
        return torch.Generator().manual_seed(seed)


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row's ``logits`` ``[vocab]`` (float32, on the CPU)."""
    if sampling.temperature == 0 or generator is None:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs[before >= sampling.top_p] = 0.0  # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def logprob_entry(logits: torch.Tensor, token: int, top: int, decode) -> dict[str, Any]:
    """The chosen token's log-probability under the (steered) model and the ``top`` most
    likely alternatives, in the OpenAI chat ``logprobs.content`` item shape."""
    logprobs = torch.log_softmax(logits, dim=-1)

    def item(t: int) -> dict[str, Any]:
        text = decode([t])
        return {"token": text, "logprob": float(logprobs[t]), "bytes": list(text.encode())}

    entry = item(token)
    entry["top_logprobs"] = [item(int(t)) for t in logprobs.topk(top).indices] if top else []
    return entry


@dataclass
class TextStream:
    """A completion's text as tokens arrive: each ``push`` returns the new text that is safe
    to send. Text that could still turn into a stop string, or ends in a partial UTF-8
    character, is held back until the next token settles it."""

    decode: Any  # token ids -> text
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    stopped: bool = False  # a stop string was found; text ends before it

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.flush()
        self.text = text
        hold = max((len(s) - 1 for s in self.stop), default=0)
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            safe = min(safe, len(text) - 1)
        if safe <= self.sent:
            return ""
        delta, self.sent = text[self.sent : safe], safe
        return delta

    def flush(self) -> str:
        """Everything not sent yet (at the end of the completion)."""
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta
