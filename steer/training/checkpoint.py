"""Training checkpoints that run no code when read: tensors in safetensors, the rest in JSON.

A checkpoint is the folder ``checkpoint/`` inside a run's checkpoint folder, holding

* ``tensors.safetensors``: the parameters (``params.W_enc`` ...), Adam's per-parameter state
  (``adam.W_enc.exp_avg``, ``adam.W_enc.exp_avg_sq``, ``adam.W_enc.step``), the dead-feature
  clocks and firing counts, the torch RNG state and any generator state (uint8 tensors);
* ``state.json``: step, scale, last metrics, Adam's ``param_groups`` hyper-parameters, the
  data position, the run key and the trainer's other plain values, plus ``format``.

The folder is replaced as a whole (:func:`steer.io.atomic_dir`), so a kill or a full disk
leaves the previous checkpoint whole: the two files always belong to the same step. Reading
uses only ``safetensors`` and ``json``; an older ``checkpoint.pt`` (serialized Python objects,
whose loading could run code) is never opened.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch as st
import torch

from steer.errors import SteerError
from steer.io import atomic_dir

log = logging.getLogger(__name__)

CHECKPOINT_DIRNAME = "checkpoint"
TENSORS_FILE = "tensors.safetensors"
VALUES_FILE = "state.json"
LEGACY_FILE = "checkpoint.pt"  # the old format, Python objects that could run code: never read
FORMAT = 1
_ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


class CheckpointError(ValueError):
    """A checkpoint whose content does not fit the run; the message is the one-line problem."""


@dataclass
class TrainState:
    """A trainer's exact state: ``tensors`` (for safetensors) and JSON-able ``values``.

    The reading helpers check what they take (presence, shape, dtype, type) and raise
    :class:`CheckpointError`; :meth:`check_all_taken` then refuses tensors nobody asked for.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    _taken: set[str] = field(default_factory=set, repr=False)

    def tensor(self, name: str, shape: Any, dtype: torch.dtype | None) -> torch.Tensor:
        """The tensor ``name``, which must have ``shape`` and (unless None) ``dtype``."""
        t = self.tensors.get(name)
        if t is None:
            raise CheckpointError(f"tensor {name!r} is missing")
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(
                f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}"
            )
        if dtype is not None and t.dtype != dtype:
            raise CheckpointError(f"tensor {name!r} is {t.dtype}, expected {dtype}")
        self._taken.add(name)
        return t

    def generator(self, name: str) -> torch.Tensor:
        """The CPU generator state ``name`` (uint8), checked by loading it into a scratch
        generator, so a corrupt one is refused before any state changes."""
        shape = torch.Generator().get_state().shape
        t = self.tensor(name, shape, torch.uint8)
        try:
            torch.Generator().set_state(t)
        except RuntimeError as exc:
            raise CheckpointError(f"tensor {name!r} is not a generator state: {exc}") from None
        return t

    def value(self, name: str, kind: type) -> Any:
        """The value ``name``, of ``kind`` (int excludes bool; float accepts an int)."""
        if name not in self.values:
            raise CheckpointError(f"{name!r} is missing")
        value = self.values[name]
        if not _is_kind(value, kind):
            raise CheckpointError(f"{name!r} is not of type {kind.__name__}: {_short(value)}")
        return float(value) if kind is float else value

    def check_all_taken(self) -> None:
        """Refuse tensors the trainer did not read (a checkpoint of something else)."""
        extra = sorted(set(self.tensors) - self._taken)
        if extra:
            raise CheckpointError(f"unexpected tensor {extra[0]!r}")


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------- Adam


def put_adam(state: TrainState, opt: torch.optim.Optimizer, names: list[str]) -> None:
    """Add ``opt``'s state to ``state``: per-parameter tensors named by parameter, and the
    ``param_groups`` hyper-parameters as ``adam_groups`` (``names`` in the optimizer's order)."""
    saved = opt.state_dict()
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            state.tensors[f"adam.{names[index]}.{key}"] = value.detach().clone()
    state.values["adam_groups"] = saved["param_groups"]


def take_adam(state: TrainState, opt: torch.optim.Optimizer, params: dict[str, Any]) -> dict:
    """The ``state_dict()`` structure ``opt.load_state_dict`` expects, rebuilt from ``state``
    and checked against ``params`` (name -> parameter, in the optimizer's order)."""
    adam: dict[int, dict[str, torch.Tensor]] = {}
    for index, (name, param) in enumerate(params.items()):
        if not any(key.startswith(f"adam.{name}.") for key in state.tensors):
            continue  # a parameter Adam has not stepped yet has no state
        adam[index] = {
            key: state.tensor(
                f"adam.{name}.{key}",
                () if key == "step" else param.shape,
                None if key == "step" else param.dtype,
            )
            for key in _ADAM_KEYS
        }
    template = opt.state_dict()["param_groups"]
    saved = state.value("adam_groups", list)
    if len(saved) != len(template):
        raise CheckpointError(f"'adam_groups' holds {len(saved)} groups, expected {len(template)}")
    return {
        "state": adam,
        "param_groups": [_group(h, w) for h, w in zip(saved, template, strict=True)],
    }


def _group(have: Any, want: dict[str, Any]) -> dict[str, Any]:
    """One saved param group, in the types the live optimizer's group has (JSON turned the
    betas tuple into a list); the parameter indices must be those of this optimizer."""
    if not isinstance(have, dict):
        raise CheckpointError(f"'adam_groups' holds {_short(have)}, not a group")
    group = {}
    for key, default in want.items():
        if key not in have:
            raise CheckpointError(f"'adam_groups' misses {key!r}")
        value = have[key]
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if key == "params":
            fits = value == default
        elif default is None or isinstance(default, bool):
            fits = value is None or isinstance(value, bool)
        elif isinstance(default, (int, float)):
            fits = _is_kind(value, float)
        elif isinstance(default, tuple):
            fits = len(value) == len(default) and all(_is_kind(v, float) for v in value)
        else:
            fits = type(value) is type(default)
        if not fits:
            raise CheckpointError(f"'adam_groups' {key!r} is {_short(have[key])}")
        group[key] = value
    return group


# ----------------------------------------------------------------------------- files


def save_checkpoint(folder: Path, state: TrainState) -> None:
    """Write ``state`` to ``folder`` (tensors + JSON) as one unit, replacing the previous
    checkpoint only once both files are complete. A filesystem fault is an ``OSError``
    naming ``folder``."""
    # Encode first: a value JSON cannot hold fails before the disk is touched.
    text = json.dumps({"format": FORMAT, **state.values}, indent=1, sort_keys=True)
    tensors = {name: t.detach().contiguous() for name, t in state.tensors.items()}
    with atomic_dir(folder) as tmp:
        # Through the module, so a test can stand a full disk in for the writer.
        st.save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / VALUES_FILE).write_text(text, encoding="utf-8")
    for old in _set_aside(folder):  # earlier checkpoints an interrupted swap left behind
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder to resume from: ``folder``, or, when a kill fell between the two
    renames of a swap, the previous checkpoint set aside beside it; None when there is none."""
    if folder.is_dir():
        return folder
    aside = [old for old in _set_aside(folder) if (old / VALUES_FILE).is_file()]
    if aside:
        return max(aside, key=lambda p: p.stat().st_mtime)
    legacy = folder.parent / LEGACY_FILE
    if legacy.is_file():
        log.warning("%s is in the old format, which is not read: starting afresh", legacy)
    return None


def _set_aside(folder: Path) -> list[Path]:
    # atomic_dir moves the previous folder to ".<name>.old-<pid>" before renaming the new one.
    if not folder.parent.is_dir():
        return []
    return [p for p in folder.parent.glob(f".{folder.name}.old-*") if p.is_dir()]


def load_checkpoint(folder: Path) -> TrainState:
    """The state saved in ``folder``. A missing file, a truncated or corrupt one, or JSON that
    is not a checkpoint's is a one-line :class:`SteerError` naming the file."""
    tensors_path, values_path = folder / TENSORS_FILE, folder / VALUES_FILE
    for path in (tensors_path, values_path):
        if not path.is_file():
            raise SteerError("checkpoint is incomplete: the file is missing", where=str(path))
    try:
        tensors = st.load_file(str(tensors_path))
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(
            f"unreadable checkpoint tensors: {reason}", where=str(tensors_path)
        ) from None
    try:
        values = json.loads(values_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"unreadable checkpoint state: {reason}", where=str(values_path)) from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise SteerError(f"not a steer checkpoint (format {FORMAT})", where=str(values_path))
    del values["format"]
    return TrainState(tensors, values)
