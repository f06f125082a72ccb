"""Monitor events as they happen: name their tokens, report them, and stop prompts.

The engine's trace records raw monitor hits during each forward pass (:mod:`steer.steering.edit`).
:class:`LiveMonitor` is a transformers logits processor, so generate calls it right after every
forward pass with the token ids so far: the token each hit was on is known by then. It turns
the step's hits into event dicts, hands them to ``on_event`` at once (the JSONL log writes
them there, before the next token), and forces end-of-sequence as the next token of every
prompt a ``stop`` monitor fired on, which ends that prompt while the rest of the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor

from steer.steering.edit import RawEvent, Readings

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]


class LiveMonitor(LogitsProcessor):
    """The monitors of one batch: events per prompt, stops, and per-token group scores.

    ``prompt_indices`` are the recipe indices of the batch's rows; ``attention_mask`` is the
    (left-padded) prompt mask; generation counts as ended for a row at its first token in
    ``eos_ids``.
    """

    def __init__(
        self,
        *,
        tokenizer: Any,
        prompt_indices: list[int],
        attention_mask: torch.Tensor,
        eos_ids: set[int],
        on_event: EventCallback | None = None,
    ):
        self.tokenizer = tokenizer
        self.prompt_indices = prompt_indices
        self.n_prompt = attention_mask.shape[1]
        self.pads = (attention_mask == 0).sum(dim=1).tolist()
        self.eos_ids = eos_ids
        self.stop_token = min(eos_ids)
        self.on_event = on_event
        self.readings = Readings()
        self.step = 0
        self.ended: set[int] = set()  # rows whose completion is over (EOS read back)
        self.events: list[list[dict[str, Any]]] = [[] for _ in prompt_indices]
        self.actions: list[list[dict[str, Any]]] = [[] for _ in prompt_indices]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Called by generate after each forward pass, before the next token is chosen."""
        stops = self.drain(input_ids)
        if stops:
            rows = torch.tensor(sorted(stops), device=scores.device)
            scores[rows] = float("-inf")
            scores[rows, self.stop_token] = 0.0
        self.step += 1
        return scores

    def drain(self, input_ids: torch.Tensor) -> set[int]:
        """Report this step's hits; return the rows a ``stop`` monitor fired on just now."""
        if self.step > 0:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if token in self.eos_ids:
                    self.ended.add(row)
        stops: set[int] = set()
        pending, self.readings.events = self.readings.events, []
        for raw in pending:
            if raw.row in self.ended:
                continue  # the row had already ended; what follows is padding
            event = self._event(raw, input_ids)
            self.events[raw.row].append(event)
            if raw.first and raw.action != "log":
                self._act(raw, event, stops)
            if self.on_event is not None:
                self.on_event(event)
        return stops

    def _event(self, raw: RawEvent, input_ids: torch.Tensor) -> dict[str, Any]:
        if raw.step == 0:
            phase, index = "prompt", raw.position - self.pads[raw.row]
            token_id = int(input_ids[raw.row, raw.position])
        else:
            phase, index = "generated", raw.step - 1
            token_id = int(input_ids[raw.row, self.n_prompt + index])
        return {
            "prompt": self.prompt_indices[raw.row],
            "group": raw.label,
            "monitor": raw.monitor,
            "phase": phase,
            "token_index": index,
            "token": self.tokenizer.decode([token_id]),
            "feature": raw.feature,
            "activation": round(raw.activation, 4),
            "action": raw.action,
            "first": raw.first,
        }

    def _act(self, raw: RawEvent, event: dict[str, Any], stops: set[int]) -> None:
        keys = ("group", "action", "phase", "token_index", "token", "feature", "activation")
        self.actions[raw.row].append({k: event[k] for k in keys})
        if raw.action == "stop":
            stops.add(raw.row)
        elif raw.action == "warn":
            log.warning(
                "monitor %s fired on prompt %d at %s token %d %r (feature %d, activation %.2f)",
                raw.label,
                event["prompt"],
                event["phase"],
                event["token_index"],
                event["token"],
                raw.feature,
                raw.activation,
            )

    def trace(self, row: int, ids: torch.Tensor, length: int) -> dict[str, Any]:
        """One row's tokens and, per monitor, the score each token got (the largest watched
        activation; ``None`` where the monitor did not read the token), for reports.

        ``ids`` are the output ids of the batch, ``length`` the row's completion length.
        """
        decode = self.tokenizer.decode
        prompt_ids = ids[row, self.pads[row] : self.n_prompt].tolist()
        new_ids = ids[row, self.n_prompt : self.n_prompt + length].tolist()
        groups: dict[str, dict[str, list]] = {}
        for reading in self.readings.scores:
            group = groups.setdefault(
                reading.label,
                {
                    "prompt": [None] * len(prompt_ids),
                    "generated": [None] * length,
                    "prompt_features": [None] * len(prompt_ids),
                    "generated_features": [None] * length,
                },
            )
            values = reading.values[row].tolist()
            features = reading.features[row].tolist()
            if reading.step == 0:
                group["prompt"] = [round(v, 4) for v in values[self.pads[row] :]]
                group["prompt_features"] = features[self.pads[row] :]
            elif reading.step - 1 < length:
                group["generated"][reading.step - 1] = round(values[0], 4)
                group["generated_features"][reading.step - 1] = features[0]
        return {
            "prompt_tokens": [decode([t]) for t in prompt_ids],
            "generated_tokens": [decode([t]) for t in new_ids],
            "groups": groups,
        }
