"""Monitor types: read feature activations during generation and report events.

A monitor never changes the model. It sees the activations of the features it watches, read
from the residual stream *after* every intervention at that site (what the model really
carries), on the prompt pass and on every generated token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from steer.errors import SteerError
from steer.plugins.registry import RegistryKind
from steer.schema import first_error

if TYPE_CHECKING:  # plugins load without torch: `steer --help` stays fast
    import torch

# observe(acts [batch, positions, features], spec) -> bool mask of the same shape: which
# (position, feature) pairs are events.
ObserveFn = Callable[["torch.Tensor", Any], "torch.Tensor"]
# score(acts [batch, positions, features], spec) -> [batch, positions]: the monitor's own
# score of each position (a linear monitor's weighted sum), where "the largest activation"
# is not what it tests.
ScoreFn = Callable[["torch.Tensor", Any], "torch.Tensor"]


@dataclass(frozen=True)
class MonitorType:
    """One kind of monitor.

    Attributes:
        name: what recipes write as a monitor's ``plugin:``.
        observe: ``observe(acts, spec) -> mask``; ``acts`` has shape
            ``[batch, positions, n_features]`` for the watched features (padding already
            excluded by the engine), ``spec`` is the recipe's monitor entry
            (:class:`steer.steering.recipe.MonitorSpec`) with this monitor's settings as
            attributes (``spec.threshold``). Returns a boolean mask of the same shape; each
            True is reported as an event. steer calls it everywhere a monitor is scored:
            during generation and in ``steer monitor score``.
        description: one line for ``steer plugins``.
        settings: a pydantic model of the monitor's own settings, which recipes write as keys
            of the monitor entry (``threshold: 5.0``); its defaults fill the keys a recipe
            leaves out. ``None``: the monitor takes no settings.
        monotone: ``observe`` never loses a hit when activations grow (true of a threshold
            test). The engine may then screen with a cheap upper bound of the activations
            (:meth:`steer.sae.base.SAE.encode_features_bound`) and encode exactly only where
            the bound already fires; otherwise it encodes every position exactly.
        score: ``score(acts, spec) -> [batch, positions]``, the number ``observe`` compares
            with its threshold, shown by ``steer monitor score``; ``None``: the largest
            watched activation (right for ``threshold``).
        per_feature: settings that hold one value per watched feature (``linear``'s
            ``weights``); ``steer check`` refuses an entry where the counts differ.
    """

    name: str
    observe: ObserveFn
    description: str = ""
    monotone: bool = False
    settings: type[BaseModel] | None = None
    score: ScoreFn | None = None
    per_feature: tuple[str, ...] = ()


MONITORS: RegistryKind[MonitorType] = RegistryKind(
    hook="steer_register_monitors",
    kind="monitor",
    expected=MonitorType,
    callables=("observe",),
    lookup="monitor plugin",
)


def monitor_settings(
    monitor: MonitorType, given: dict[str, Any], *, where: str, n_features: int | None = None
) -> dict[str, Any]:
    """A monitor entry's settings (the keys beyond the common ones), checked against what
    ``monitor`` declares and completed with its defaults; a problem is a one-line
    :class:`SteerError` at ``where.KEY``. With ``n_features`` (the entry's feature count),
    each of the monitor's ``per_feature`` settings must hold that many values."""
    declared = monitor.settings.model_fields if monitor.settings is not None else {}
    for key in given:
        if key not in declared:
            takes = ", ".join(declared) if declared else "no settings"
            raise SteerError(
                f"unknown key (monitor {monitor.name!r} takes: {takes})", where=f"{where}.{key}"
            )
    if monitor.settings is None:
        return {}
    try:
        checked = monitor.settings.model_validate(given).model_dump()
    except ValidationError as exc:
        at, message = first_error(exc)
        raise SteerError(message, where=f"{where}.{at}") from None
    for key, value in checked.items():
        # Whatever the plugin's model allows: NaN and infinity pass every comparison test.
        if isinstance(value, float) and not math.isfinite(value):
            raise SteerError(f"must be a finite number, got {value}", where=f"{where}.{key}")
    for key in monitor.per_feature if n_features is not None else ():
        n = len(checked[key])
        if n != n_features:
            raise SteerError(
                f"has {n} value{'s' if n != 1 else ''} for {n_features} features (one per "
                "entry of `features`, in the same order)",
                where=f"{where}.{key}",
            )
    return checked


def _short(value: Any) -> str:
    # A linear monitor's weights run to dozens of numbers: a summary reads better in one line.
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{len(value)} values]"
    return str(value)


def describe_monitor(plugin: str, settings: dict[str, Any]) -> str:
    """A monitor and its settings in a few words, for tables and summaries: ``threshold 5``
    (a setting named like its plugin reads alone), ``band low 1, high 3``; a list of more than
    four values is shown as its length."""
    shown = ", ".join(f"{k} {_short(v)}" for k, v in settings.items())
    if list(settings) == [plugin]:
        return shown
    return f"{plugin} {shown}".strip()
