"""Turn a recipe's interventions and monitors into per-site edit plans for one batch.

A *site* is one SAE attached at one hook (a site kind at a block). For a batch of prompts, each site gets the union of
the features any step touches, and a list of operations, each applying to a subset of batch
rows (prompts in one batch may carry different interventions). The per-token work then is:
encode only those features, let each operation edit its rows, decode only the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steer.model.sites import Hook
from steer.plugins.registry import registry
from steer.sae.base import SAE
from steer.sae.fit import transcoder_write_hook
from steer.steering.interventions import INTERVENTIONS, ApplyFn
from steer.steering.monitors import MONITORS, MonitorType
from steer.steering.recipe import InterventionSpec, MonitorSpec, Recipe, ResponseSpec


def active_at(positions: str, step: int) -> bool:
    """Whether a step acting on ``positions`` runs on generation step ``step``.

    Step 0 is the prompt pass (every prompt token); step k >= 1 processes the k-th generated
    token. ``generated`` therefore edits the residual stream of generated tokens, from the
    first one on.
    """
    return positions == "all" or (positions == "prompt") == (step == 0)


@dataclass
class Operation:
    """One intervention applied to some rows of a batch at one site."""

    name: str
    apply: ApplyFn
    value: float | None
    cols: torch.Tensor  # positions in the site's feature list
    rows: torch.Tensor | None  # None: every row of the batch
    positions: str


@dataclass
class Response:
    """A monitor's conditional intervention: ``apply`` to ``features`` of a prompt from the
    token where the monitor first fired on it."""

    name: str
    apply: ApplyFn
    value: float | None
    features: torch.Tensor  # SAE feature indices
    decoder: torch.Tensor  # their W_dec rows, in float32 at least


@dataclass
class Watch:
    """One monitor (a named group of features) at one site, on some rows of the batch.

    ``fired`` is this batch's state: batch row -> ``(step, position)`` where the group first
    fired on that row, which is where its action starts.
    """

    monitor: MonitorType
    spec: MonitorSpec
    label: str
    features: torch.Tensor  # SAE feature indices
    positions: str
    response: Response | None = None
    fired: dict[int, tuple[int, int]] = field(default_factory=dict)
    rows: torch.Tensor | None = None  # the batch rows it watches; None: every row


@dataclass
class Site:
    """An SAE at one site, with what this batch does there."""

    sae_id: str
    sae: SAE
    hook: Hook
    # A transcoder's output site: the change it decodes at ``hook`` waits in ``pending`` until
    # the forward pass reaches ``write_hook`` (None: an SAE writes where it reads).
    write_hook: Hook | None = None
    pending: torch.Tensor | None = None
    features: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    decoder: torch.Tensor | None = None  # W_dec rows of `features`, in float32 at least
    operations: list[Operation] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)

    def busy_at(self, step: int) -> bool:
        return any(active_at(op.positions, step) for op in self.operations) or any(
            active_at(w.positions, step) for w in self.watches
        )

    def move_to(self, device: torch.device) -> None:
        """Move the SAE and this batch's index tensors to ``device``. A trace sent to a remote
        server carries them as the CPU tensors they were here; the model there is on its GPU."""
        self.sae = self.sae.to(device)
        self.features = self.features.to(device)
        if self.decoder is not None:
            self.decoder = self.decoder.to(device)
        for op in self.operations:
            op.cols = op.cols.to(device)
            op.rows = op.rows.to(device) if op.rows is not None else None
        for watch in self.watches:
            watch.features = watch.features.to(device)
            watch.rows = watch.rows.to(device) if watch.rows is not None else None
            if watch.response is not None:
                watch.response.features = watch.response.features.to(device)
                watch.response.decoder = watch.response.decoder.to(device)


@dataclass(frozen=True)
class RowSteps:
    """What one batch row does: its interventions, and its monitors as ``(group name, spec)``
    (a recipe's rows all share its monitors; a server's requests each bring their own)."""

    interventions: list[InterventionSpec]
    monitors: list[tuple[str, MonitorSpec]]


def build_sites(
    recipe: Recipe,
    prompt_indices: list[int],
    saes: dict[str, tuple[SAE, Hook]],
    pm,
    *,
    dtype: torch.dtype,
) -> list[Site]:
    """The sites of one batch (the prompts ``prompt_indices`` of ``recipe``), in forward order.

    ``saes`` maps an SAE id to the loaded SAE (on its block's device) and its site; decoder
    rows are kept in ``dtype``.
    """
    monitors = list(zip(recipe.group_names(), recipe.monitors, strict=True))
    rows = [RowSteps(recipe.interventions_for(recipe.prompts[p]), monitors) for p in prompt_indices]
    where = {id(step): path for path, step in recipe.steps()}
    return build_row_sites(rows, saes, pm, dtype=dtype, where=where)


def build_row_sites(
    rows: list[RowSteps],
    saes: dict[str, tuple[SAE, Hook]],
    pm,
    *,
    dtype: torch.dtype,
    where: dict[int, str] | None = None,
) -> list[Site]:
    """The sites of a batch whose rows each do ``rows[i]``, in forward order. Identical steps
    on several rows become one operation (or watch) on those rows. ``where`` names a step's
    field path (by ``id``) in plugin lookup errors."""
    where = where or {}
    sites = {
        sae_id: Site(sae_id=sae_id, sae=sae, hook=hook, write_hook=transcoder_write_hook(sae))
        for sae_id, (sae, hook) in saes.items()
    }
    features: dict[str, list[int]] = {sae_id: [] for sae_id in sites}

    def columns(sae_id: str, feats: list[int]) -> torch.Tensor:
        known = features[sae_id]
        for f in feats:
            if f not in known:
                known.append(f)
        index = [known.index(f) for f in feats]
        return torch.tensor(index, dtype=torch.long, device=sites[sae_id].sae.device)

    def row_index(found: list[int], sae_id: str) -> torch.Tensor | None:
        if len(found) == len(rows):
            return None
        return torch.tensor(found, dtype=torch.long, device=sites[sae_id].sae.device)

    for step, found in _grouped(rows, lambda steps: steps.interventions):
        kind = registry(pm, INTERVENTIONS).get(
            step.plugin, where=where.get(id(step), "interventions")
        )
        sites[step.sae].operations.append(
            Operation(
                name=step.plugin,
                apply=kind.apply,
                value=step.value,
                cols=columns(step.sae, list(step.features)),
                rows=row_index(found, step.sae),
                positions=step.positions,
            )
        )
    for (label, spec), found in _grouped(rows, lambda steps: steps.monitors):
        at = where.get(id(spec), "monitors")
        kind = registry(pm, MONITORS).get(spec.plugin, where=at)
        site = sites[spec.sae]
        site.watches.append(
            Watch(
                monitor=kind,
                spec=spec,
                label=label,
                features=torch.tensor(spec.features, dtype=torch.long, device=site.sae.device),
                positions=spec.positions,
                response=_response(spec, site.sae, pm, where=f"{at}.action", dtype=dtype),
                rows=row_index(found, spec.sae),
            )
        )
    for site in sites.values():
        # Each site's tensors live where its SAE does: with a device_map, its block's GPU.
        here = site.sae.device
        site.features = torch.tensor(features[site.sae_id], dtype=torch.long, device=here)
        if site.operations:
            site.decoder = site.sae.decoder_rows(site.features).detach().to(here, dtype=dtype)
    busy = [s for s in sites.values() if s.operations or s.watches]
    return sorted(busy, key=lambda s: s.hook)


def _grouped(rows: list[RowSteps], steps_of) -> list[tuple]:
    """Identical steps over the batch's rows, each once with the rows doing it: a recipe-level
    intervention becomes one operation on every row rather than one per prompt."""
    found: dict[str, tuple[object, list[int]]] = {}
    for row, steps in enumerate(rows):
        for step in steps_of(steps):
            found.setdefault(_identity(step), (step, []))[1].append(row)
    return list(found.values())


def _identity(step) -> str:
    """A step's identity: its JSON form (specs are frozen but hold unhashable lists); a
    monitor comes as ``(group name, spec)``."""
    if isinstance(step, tuple):
        label, spec = step
        return f"{label}\0{spec.model_dump_json()}"
    return step.model_dump_json()


def _response(
    spec: MonitorSpec, sae: SAE, pm, *, where: str, dtype: torch.dtype
) -> Response | None:
    action = spec.action
    if not isinstance(action, ResponseSpec):
        return None
    kind = registry(pm, INTERVENTIONS).get(action.plugin, where=where)
    features = torch.tensor(
        action.features if action.features is not None else spec.features,
        dtype=torch.long,
        device=sae.device,
    )
    return Response(
        name=action.plugin,
        apply=kind.apply,
        value=action.value,
        features=features,
        decoder=sae.decoder_rows(features).detach().to(dtype=dtype),
    )
