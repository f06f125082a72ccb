"""The rows generating together in a server: one left-padded KV cache that requests join and
leave between forward passes (iteration-level batching).

Every row's real tokens end at the right edge, so a decode step feeds one token per row. A
joining group (prefilled on its own) is padded on the left to the batch's length, or the batch
to the group's, and stacked under it; a leaving row is dropped and the padding columns every
remaining row has are cut off. Position ids count each row's real tokens, so padding never
shifts a row's positions, and the attention mask keeps rows from seeing their padding.
"""

from __future__ import annotations

import torch

from steer.errors import SteerError


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[len(rows), longest]`` with each row on the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


class BatchState:
    """A batch's KV cache, attention mask and each row's next position id."""

    def __init__(self, cache, mask: torch.Tensor, positions: torch.Tensor):
        self.cache = cache
        self.mask = mask  # [rows, length]: 1 on real tokens
        self.positions = positions  # [rows]: the position id of each row's next token

    @classmethod
    def prefill_inputs(cls, rows: list[list[int]], pad_id: int, device) -> dict:
        """The forward inputs that prefill ``rows`` (token ids) into a fresh cache."""
        from transformers import DynamicCache

        ids, mask = left_padded(rows, pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": positions.to(device),
            "cache": DynamicCache(),
        }

    @classmethod
    def after_prefill(cls, inputs: dict) -> BatchState:
        mask = inputs["attention_mask"]
        return cls(inputs["cache"], mask, mask.sum(dim=1))

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def step_inputs(self, tokens: torch.Tensor) -> dict:
        """The inputs of a decode step feeding ``tokens`` ``[rows]`` (one per row); the mask
        and positions advance with it."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        inputs = {
            "input_ids": tokens.view(-1, 1).to(self.mask.device),
            "attention_mask": self.mask,
            "position_ids": self.positions.view(-1, 1),
            "cache": self.cache,
        }
        self.positions = self.positions + 1
        return inputs

    def join(self, other: BatchState) -> None:
        """Stack ``other``'s rows under this batch's, padding the shorter on the left."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        self_layers, other_layers = _layers(self.cache), _layers(other.cache)
        for mine, theirs in zip(self_layers, other_layers, strict=True):
            for name in ("keys", "values"):
                a = _pad_left(getattr(mine, name), length, dim=2)
                b = _pad_left(getattr(theirs, name), length, dim=2)
                setattr(mine, name, torch.cat([a, b.to(a.device, a.dtype)], dim=0))
        self.mask = torch.cat(
            [_pad_left(self.mask, length, dim=1), _pad_left(other.mask, length, dim=1)], dim=0
        )
        self.positions = torch.cat([self.positions, other.positions.to(self.positions.device)])

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then cut the padding they all share."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        real = self.mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in _layers(self.cache):
            for name in ("keys", "values"):
                value = getattr(layer, name)
                setattr(layer, name, value[index.to(value.device)][:, :, start:])


def _layers(cache) -> list:
    """The cache's layers, each holding ``keys``/``values`` ``[rows, heads, length, dim]``."""
    layers = list(getattr(cache, "layers", []))
    for layer in layers:
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
            raise SteerError(
                f"cannot batch requests on a {type(layer).__name__} cache: steer serve needs "
                "a model whose KV cache holds every position (no sliding-window or recurrent "
                "layers)"
            )
    return layers


def _pad_left(value: torch.Tensor, length: int, *, dim: int) -> torch.Tensor:
    missing = length - value.shape[dim]
    if missing <= 0:
        return value
    shape = list(value.shape)
    shape[dim] = missing
    return torch.cat([value.new_zeros(shape), value], dim=dim)
