"""The per-token work at one site: edit features, write back the change, read the monitors.

This runs on every generation step (the prompt pass and each new token), so it does as little
as it can: it encodes only the features the batch touches, decodes only the *change*
``x + (f_new - f_old) @ W_dec[features]`` (the SAE's reconstruction error stays in the
residual stream, and untouched features cost nothing), and skips whatever is inactive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steer.errors import SteerError
from steer.plan import Site, active_at


@dataclass(frozen=True)
class RawEvent:
    """A monitor hit, before token texts are known (they are filled in after generation)."""

    label: str
    monitor: str
    row: int
    step: int
    position: int  # index along the sequence axis of this step's hidden state
    feature: int
    activation: float


def edit_site(
    site: Site, hidden: torch.Tensor, step: int, valid: torch.Tensor | None
) -> tuple[torch.Tensor, list[RawEvent]]:
    """Apply a site's operations to ``hidden`` [batch, seq, d_model] and read its monitors.

    ``valid`` [batch, seq] marks real (non-padding) tokens on the prompt pass; it is ``None``
    on decode steps, where every row holds one real token. Returns the new hidden state (the
    same tensor object when nothing was edited) and the monitor events.
    """
    operations = [op for op in site.operations if active_at(op.positions, step)]
    if operations:
        hidden = _apply_operations(site, operations, hidden, valid)
    events: list[RawEvent] = []
    for watch in site.watches:
        if not active_at(watch.positions, step):
            continue
        acts = site.sae.encode_features(hidden, watch.features)
        hits = watch.monitor.observe(acts, watch.spec)
        if valid is not None:
            hits = hits & valid.unsqueeze(-1)
        for row, pos, col in hits.nonzero().tolist():
            events.append(
                RawEvent(
                    label=watch.label,
                    monitor=watch.monitor.name,
                    row=row,
                    step=step,
                    position=pos,
                    feature=int(watch.features[col]),
                    activation=float(acts[row, pos, col]),
                )
            )
    return hidden, events


def _apply_operations(site, operations, hidden, valid) -> torch.Tensor:
    before = site.sae.encode_features(hidden, site.features)  # [B, T, m]
    after = before.clone()
    for op in operations:
        target = after if op.rows is None else after[op.rows]
        selected = target[..., op.cols]
        flat = selected.reshape(-1, selected.shape[-1])
        edited = op.apply(flat, op.value)
        if not isinstance(edited, torch.Tensor) or edited.shape != flat.shape:
            got = tuple(edited.shape) if isinstance(edited, torch.Tensor) else type(edited).__name__
            raise SteerError(
                f"intervention {op.name!r} returned {got} for activations of shape {tuple(flat.shape)}"
            )
        target[..., op.cols] = edited.reshape(selected.shape).to(target.dtype)
        if op.rows is not None:
            after[op.rows] = target
    change = after - before
    if valid is not None:
        change = change * valid.unsqueeze(-1)  # never write into padding
    return hidden + change.to(hidden.dtype) @ site.decoder
