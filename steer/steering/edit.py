"""The per-token work at one site: edit features, write back the change, read the monitors,
and apply the responses of monitors that fired.

This runs on every generation step (the prompt pass and each new token), so it does as little
as it can: it encodes only the features the batch touches, decodes only the *change*
``x + (f_new - f_old) @ W_dec[features]`` (the SAE's reconstruction error stays in the
residual stream, and untouched features cost nothing), and skips whatever is inactive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steer.errors import SteerError
from steer.model.sites import Hook
from steer.steering.plan import Site, active_at


@dataclass(frozen=True)
class RawEvent:
    """A monitor hit, before token texts are known (they are filled in after the step)."""

    label: str  # the monitor's group name
    monitor: str  # its plugin
    row: int
    step: int
    position: int  # index along the sequence axis of this step's hidden state
    feature: int
    activation: float
    action: str
    first: bool  # the group's first hit on this row: where its action starts


@dataclass(frozen=True)
class GroupScores:
    """One step's reading of one monitor: per position, the largest watched activation and
    the feature it came from (for reports)."""

    label: str
    step: int
    values: torch.Tensor  # [batch, seq]
    features: torch.Tensor  # [batch, seq] SAE feature indices


@dataclass
class Readings:
    """What the monitors of a run read: events (drained as they are reported) and scores
    (kept for reports unless ``keep_scores`` is off: a server never reads them back)."""

    events: list[RawEvent] = field(default_factory=list)
    scores: list[GroupScores] = field(default_factory=list)
    keep_scores: bool = True


def edit_site(
    site: Site, hidden: torch.Tensor, step: int, valid: torch.Tensor | None, readings: Readings
) -> torch.Tensor:
    """Apply a site's operations to ``hidden`` [batch, seq, width], read its monitors into
    ``readings``, and apply the responses of monitors that fired.

    ``valid`` [batch, seq] marks real (non-padding) tokens on the prompt pass; it is ``None``
    on decode steps, where every row holds one real token. Returns the new hidden state (the
    same tensor object when nothing was edited). A transcoder's change belongs to its output
    site: it is kept in ``site.pending`` (see :func:`write_pending`) and ``hidden`` is returned
    unchanged.
    """
    if valid is not None and valid.device != hidden.device:
        valid = valid.to(hidden.device)  # with a device_map, the block may be on another GPU
    if site.sae.device != hidden.device:
        site.move_to(hidden.device)  # on a remote server (the SAE came as CPU tensors): once
    transcoder = site.write_hook is not None
    target = (
        hidden.new_zeros(*hidden.shape[:-1], site.sae.cfg.output_width) if transcoder else hidden
    )
    operations = [op for op in site.operations if active_at(op.positions, step)]
    if operations:
        target = _apply_operations(site, operations, hidden, valid, target)
    for watch in site.watches:
        if active_at(watch.positions, step):
            # An SAE's monitors read the stream after its edits; a transcoder's, its input.
            read = hidden if transcoder else target
            _read_watch(site, watch, read, step, valid, readings)
            if watch.response is not None and watch.fired:
                target = _respond(site, watch, read, step, valid, target)
    if transcoder:
        site.pending = target
        return hidden
    return target


def sites_by_hook(sites: list[Site]) -> dict[Hook, list[Site]]:
    """The sites acting at each hook, in forward order: an SAE at its site, a transcoder at
    its input site and again at its output site (where its change is written)."""
    by_hook: dict[Hook, list[Site]] = {}
    for site in sites:
        by_hook.setdefault(site.hook, []).append(site)
        if site.write_hook is not None:
            by_hook.setdefault(site.write_hook, []).append(site)
    return by_hook


def edit_hook(
    sites: list[Site],
    hook: Hook,
    step: int,
    hidden: torch.Tensor,
    valid: torch.Tensor | None,
    readings: Readings,
) -> torch.Tensor:
    """The value at ``hook`` after every site acting there (``sites_by_hook(...)[hook]``) has
    edited or written into it on ``step``."""
    for site in sites:
        if hook == site.write_hook:
            hidden = write_pending(site, hidden)
        else:
            hidden = edit_site(site, hidden, step, valid, readings)
    return hidden


def write_pending(site: Site, hidden: torch.Tensor) -> torch.Tensor:
    """At a transcoder's output site: ``hidden`` plus the change it decoded at its input site
    on this step (``hidden`` itself when there is none)."""
    pending, site.pending = site.pending, None
    if pending is None:
        return hidden
    return hidden + pending.to(hidden.device, hidden.dtype)


def _read_watch(site, watch, hidden, step, valid, readings: Readings) -> None:
    """Record the watch's scores and hits on this step (its rows only) in ``readings``."""
    rows = watch.rows
    if rows is not None:  # a monitor of some rows only (a server's per-request monitors)
        hidden = hidden[rows]
        valid = valid[rows] if valid is not None else None
    values = _watched_values(site, watch, hidden)
    hits = watch.monitor.observe(values, watch.spec)
    if valid is not None:
        hits = hits & valid.unsqueeze(-1)
    if readings.keep_scores:
        top = values.max(dim=-1)
        readings.scores.append(
            GroupScores(watch.label, step, top.values.float(), watch.features[top.indices])
        )
    batch_rows = rows.tolist() if rows is not None else None
    for sub, pos, col in hits.nonzero().tolist():
        row = batch_rows[sub] if batch_rows is not None else sub
        first = row not in watch.fired
        if first:
            watch.fired[row] = (step, pos)
        readings.events.append(
            RawEvent(
                label=watch.label,
                monitor=watch.monitor.name,
                row=row,
                step=step,
                position=pos,
                feature=int(watch.features[col]),
                activation=float(values[sub, pos, col]),
                action=watch.spec.action_name,
                first=first,
            )
        )


def _watched_values(site, watch, hidden: torch.Tensor) -> torch.Tensor:
    """The watched features' activations on ``hidden`` [rows, seq, width], encoded exactly
    only where the cheap bound cannot rule a hit out."""
    values, exact = site.sae.encode_features_bound(hidden, watch.features)
    if exact:
        return values
    if not watch.monitor.monotone:
        return site.sae.encode_features(hidden, watch.features)
    # The bound is at least the activation, so a position the bound does not flag has no
    # hit; encode exactly only the (rare) flagged ones.
    flagged = watch.monitor.observe(values, watch.spec).any(dim=-1)
    if bool(flagged.any()):
        values = values.clone()
        values[flagged] = site.sae.encode_features(hidden[flagged], watch.features)
    return values


def _respond(site, watch, hidden, step, valid, target) -> torch.Tensor:
    """Apply the watch's response to every row it fired on, from the firing token on. Only
    those rows are encoded (for a TopK SAE that is the full encode, so it matters)."""
    response = watch.response
    rows = sorted(watch.fired)
    mask = torch.zeros(len(rows), hidden.shape[1], dtype=torch.bool, device=hidden.device)
    for i, row in enumerate(rows):
        fired_step, pos = watch.fired[row]
        mask[i, pos if fired_step == step else 0 :] = True
    index = torch.tensor(rows, dtype=torch.long, device=hidden.device)
    if valid is not None:
        mask &= valid[index]
    before = site.sae.encode_features(hidden[index], response.features)
    flat = before.reshape(-1, before.shape[-1])
    after = _checked(response.name, response.apply(flat, response.value), flat)
    change = (after.reshape(before.shape) - before) * mask.unsqueeze(-1)
    delta = change.to(response.decoder.dtype) @ response.decoder
    delta = _in_model_space(site.sae, hidden[index], delta)
    return target.index_add(0, index, delta.to(target.dtype))


def _checked(name: str, edited, flat: torch.Tensor) -> torch.Tensor:
    if not isinstance(edited, torch.Tensor) or edited.shape != flat.shape:
        got = tuple(edited.shape) if isinstance(edited, torch.Tensor) else type(edited).__name__
        raise SteerError(
            f"intervention {name!r} returned {got} for activations of shape {tuple(flat.shape)}"
        )
    return edited.to(flat.dtype)


def _apply_operations(site, operations, hidden, valid, out) -> torch.Tensor:
    """``out`` plus the decoded change the operations make to ``hidden``'s features."""
    before = site.sae.encode_features(hidden, site.features)  # [B, T, m]
    after = before.clone()
    for op in operations:
        target = after if op.rows is None else after[op.rows]
        selected = target[..., op.cols]
        flat = selected.reshape(-1, selected.shape[-1])
        edited = _checked(op.name, op.apply(flat, op.value), flat)
        target[..., op.cols] = edited.reshape(selected.shape)
        if op.rows is not None:
            after[op.rows] = target
    change = after - before
    if valid is not None:
        change = change * valid.unsqueeze(-1)  # never write into padding
    delta = _in_model_space(site.sae, hidden, change.to(site.decoder.dtype) @ site.decoder)
    return out + delta.to(out.dtype)


def _in_model_space(sae, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """A change of the SAE's reconstruction as a change of ``hidden``: an SAE that normalises
    each token (``constant_norm_rescale``, ``layer_norm``) scales it back by that token's
    norm; others leave it as it is (a centred stream's shift cancels)."""
    if not sae.needs_input_to_decode:
        return delta
    return sae.restore_for(hidden).scale(delta.to(sae.dtype))
