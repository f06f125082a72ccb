"""Training recipes: a YAML file of :class:`~steer.training.config.TrainConfig` settings.

The schema is strict like every steer schema: an unknown key, a wrong type or an impossible
setting is a one-line error naming the file and the field, e.g.
``train.yaml: data[1].weight: Input should be greater than 0``.

Paths (``data[].path``, ``out``, ``cache_dir``, ``checkpoint_dir``) may use ``${VAR}`` or
``${VAR:-default}`` environment variables; a relative path is taken from the recipe's folder,
not the working directory. So ``path: ${STEER_CORPUS:-../../shared/corpus}/lima_1k.json`` in
``recipes/`` reads ``$STEER_CORPUS/lima_1k.json`` when the variable is set, else the corpus
beside the repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.io import read_yaml
from steer.schema import validate_schema
from steer.training.config import TrainConfig, applies

__all__ = ["load_train_recipe", "parse_train_recipe", "resolve_paths"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_train_recipe(data: Any, *, source: str = "recipe") -> TrainConfig:
    """Validate a training recipe given as plain data (e.g. from ``yaml.safe_load``)."""
    return validate_schema(TrainConfig, data, what="training recipe", source=source)


def load_train_recipe(
    path: str | Path, overrides: dict[str, Any] | None = None, *, check_files: bool = True
) -> TrainConfig:
    """Read, validate and resolve a training recipe.

    ``overrides`` replace top-level keys before validation (the CLI's flags), so a bad flag is
    reported like a bad key. With ``check_files`` a missing data file is an error here, before
    any model is loaded.
    """
    path = Path(path)
    data = read_yaml(path, what="training recipe")
    if overrides and isinstance(data, dict):
        data = merge_overrides(data, overrides)
    config = parse_train_recipe(data, source=str(path))
    return resolve_paths(config, base=path.parent, source=str(path), check_files=check_files)


def resolve_paths(
    config: TrainConfig,
    *,
    base: str | Path = ".",
    source: str = "recipe",
    check_files: bool = True,
) -> TrainConfig:
    """``config`` with ``${VAR}`` expanded in every path and relative paths resolved against
    ``base`` (the recipe's folder)."""
    base = Path(base)

    def resolve(value: str | None, where: str) -> str | None:
        if value is None:
            return None
        expanded = Path(_expand(value, where, source)).expanduser()
        return str(expanded if expanded.is_absolute() else (base / expanded).resolve())

    data = []
    for i, entry in enumerate(config.data):
        if entry.path is None:
            data.append(entry)
            continue
        local = resolve(entry.path, f"data[{i}].path")
        if check_files and not Path(local).exists():
            raise SteerError(f"data[{i}].path: data file not found: {local}", where=source)
        data.append(entry.model_copy(update={"path": local}))
    return config.model_copy(
        update={
            "data": data,
            "out": resolve(config.out, "out"),
            "cache_dir": resolve(config.cache_dir, "cache_dir"),
            "checkpoint_dir": resolve(config.checkpoint_dir, "checkpoint_dir"),
        }
    )


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A recipe's keys with ``overrides`` (the CLI's flags) put over them.

    A nested mapping (``tokens``) is merged key by key, so ``--train-tokens`` keeps
    ``tokens.collect``. Switching ``architecture`` drops the recipe's settings of the other
    one (flags stay, so ``--architecture standard --k 4`` is still an error).
    """
    out = dict(data)
    if overrides.get("architecture", out.get("architecture")) != out.get("architecture"):
        out = {key: value for key, value in out.items() if applies(key, overrides["architecture"])}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = {**out[key], **value}
        out[key] = value
    return out


def _expand(value: str, where: str, source: str) -> str:
    def env(match: re.Match) -> str:
        name, fallback = match.group(1), match.group(2)
        got = os.environ.get(name)
        if got:
            return got
        if fallback is not None:
            return fallback
        raise SteerError(f"{where}: environment variable {name} is not set", where=source)

    return _ENV.sub(env, value)
