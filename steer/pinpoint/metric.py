"""The behaviour being pinpointed, as a number per prompt read from the last position's logits.

``logit_diff``: ``logit[target] - logit[foil]``; ``logprob``: ``log p(target)``. A prompt may
name its own target and foil (they default to the metric's). Targets must be single tokens of
the model's tokenizer, checked here (the recipe cannot: it has no tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steer.errors import SteerError


@dataclass(frozen=True)
class Metric:
    """A resolved metric: per-prompt token ids of the target (and foil), and how to combine
    them. ``target_ids``/``foil_ids`` are ``[n_prompts]``, in recipe order."""

    kind: str  # "logit_diff" | "logprob"
    target: str
    target_ids: torch.Tensor
    foil: str | None = None
    foil_ids: torch.Tensor | None = None
    per_prompt: bool = False

    def __call__(self, logits: torch.Tensor, rows: list[int] | torch.Tensor) -> torch.Tensor:
        """Per-row metric ``[B]`` from logits ``[B, T, vocab]`` (last position); ``rows`` are
        the recipe indices of the prompts in the batch."""
        last = logits[:, -1].float()
        rows = torch.as_tensor(rows, dtype=torch.long)
        pick = torch.arange(len(last))
        if self.kind == "logit_diff":
            return last[pick, self.target_ids[rows]] - last[pick, self.foil_ids[rows]]
        return torch.log_softmax(last, dim=-1)[pick, self.target_ids[rows]]

    def describe(self) -> str:
        if self.kind == "logit_diff":
            text = f"logit[{self.target!r}] - logit[{self.foil!r}]"
        else:
            text = f"log p({self.target!r})"
        return text + (" (some prompts name their own target/foil)" if self.per_prompt else "")


def single_token(tokenizer: Any, text: str, *, where: str, model: str) -> int:
    """The id of ``text`` if it is exactly one token; else a one-line error showing how it
    tokenizes."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise SteerError(
            f"{text!r} is not a single token for {model}: it tokenizes as {len(ids)} tokens "
            f"{pieces}",
            where=where,
        )
    return int(ids[0])


def resolve_metric(recipe: Any, tokenizer: Any, *, model: str) -> Metric:
    """Turn a pinpoint recipe's ``metric`` (and its prompts' overrides) into a :class:`Metric`."""
    spec = recipe.metric
    kind = "logit_diff" if spec.logit_diff is not None else "logprob"
    default = spec.logit_diff if spec.logit_diff is not None else spec.logprob

    def ids(field: str) -> torch.Tensor:
        base = single_token(
            tokenizer, getattr(default, field), where=f"metric.{kind}.{field}", model=model
        )
        out = []
        for i, prompt in enumerate(recipe.prompts):
            own = getattr(prompt, field)
            where = f"prompts[{i}].{field}"
            out.append(
                base if own is None else single_token(tokenizer, own, where=where, model=model)
            )
        return torch.tensor(out, dtype=torch.long)

    per_prompt = any(p.target is not None or p.foil is not None for p in recipe.prompts)
    if kind == "logit_diff":
        return Metric(
            kind=kind,
            target=default.target,
            target_ids=ids("target"),
            foil=default.foil,
            foil_ids=ids("foil"),
            per_prompt=per_prompt,
        )
    return Metric(kind=kind, target=default.target, target_ids=ids("target"), per_prompt=per_prompt)
