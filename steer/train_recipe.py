"""Training recipes: a YAML file that says how to train an SAE, mapped onto
:class:`steer.train.TrainConfig`.

The schema is strict like steer's steering recipes (:mod:`steer.recipe`): an unknown key, a wrong
type or an impossible setting is a one-line error naming the file and the field, e.g.
``train.yaml: data[1].weight: Input should be greater than 0``. Defaults are TrainConfig's.

Paths (``data[].path``, ``out``, ``cache_dir``, ``checkpoint_dir``) may use ``${VAR}`` or
``${VAR:-default}`` environment variables; a relative path is taken from the recipe's folder,
not the working directory. So ``path: ${STEER_CORPUS:-../../shared/corpus}/lima_1k.json`` in
``recipes/`` reads ``$STEER_CORPUS/lima_1k.json`` when the variable is set, else the corpus
beside the repository.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from steer.activations import HFSource
from steer.errors import SteerError

# The steering recipe's error formatting, so both kinds of recipe report problems alike.
from steer.recipe import DEFAULT_MODEL, StrictModel, located, validate_schema
from steer.train import ARCHITECTURES, TrainConfig
from steer.yamlfile import read_yaml

__all__ = ["DataEntry", "TrainRecipe", "load_train_recipe", "parse_train_recipe", "to_config"]

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_TOPK_ONLY = ("k", "k_aux", "auxk_coef")
_STANDARD_ONLY = ("l1_", "resample_")  # name prefixes


def _only_for(name: str) -> str | None:
    """The architecture a recipe key belongs to, or None for a key every run reads."""
    if name in _TOPK_ONLY:
        return "topk"
    return "standard" if name.startswith(_STANDARD_ONLY) else None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _default(name: str) -> Any:
    """TrainConfig's default for ``name``: the recipe never restates a number."""
    return _DEFAULTS[name]


def _yaml_float(value: Any) -> Any:
    # YAML 1.1 reads 2e-3 (no dot) as a string; accept any numeric text as a float.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_yaml_float)]


class DataEntry(StrictModel):
    """One text source: a local ``path`` (file or folder) or a Hugging Face dataset ``hf``."""

    path: str | None = Field(None, min_length=1, description="A .txt/.json/.jsonl file or folder.")
    hf: str | None = Field(None, min_length=1, description="Hugging Face dataset id (online).")
    weight: Float = Field(1.0, gt=0, description="Share of the collected tokens (relative).")
    split: str = Field("train", min_length=1, description="hf only: dataset split.")
    text_field: str = Field("text", min_length=1, description="hf only: the record's text field.")
    config: str | None = Field(None, min_length=1, description="hf only: dataset config name.")
    max_rows: int | None = Field(None, ge=1, description="hf only: read at most this many rows.")

    @model_validator(mode="after")
    def _one_source(self) -> DataEntry:
        given = [k for k in ("path", "hf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path or hf")
        hf_only = {"split", "text_field", "config", "max_rows"} & self.model_fields_set
        if self.path is not None and hf_only:
            verb = "is" if len(hf_only) == 1 else "are"
            raise ValueError(f"{', '.join(sorted(hf_only))} {verb} only for hf sources")
        return self


class Tokens(StrictModel):
    """How many tokens to run through the model, and how many activations to train on."""

    collect: int = Field(_default("collect_tokens"), ge=1, description="Unique window tokens.")
    train: int = Field(
        _default("train_tokens"), ge=1, description="Activations the optimizer sees."
    )


class TrainRecipe(StrictModel):
    """A whole training run. ``k`` is for ``topk``; ``l1_coefficient`` and the resampling
    settings for ``standard``."""

    model: str = DEFAULT_MODEL
    layer: int = Field(_default("layer"), ge=0, description="Residual stream after this block.")
    architecture: Literal[ARCHITECTURES] = _default("architecture")  # type: ignore[valid-type]
    d_sae: int = Field(_default("d_sae"), ge=1)
    k: int | None = Field(None, ge=1, description=f"topk only (default {_default('k')}).")
    k_aux: int | None = Field(None, ge=1, description="topk only; default d_in // 2.")
    auxk_coef: Float | None = Field(None, ge=0, description="topk only.")
    l1_coefficient: Float | None = Field(
        None, ge=0, description=f"standard only (default {_default('l1_coefficient')})."
    )
    l1_warmup_frac: Float | None = Field(None, ge=0, le=1, description="standard only.")
    resample_every: int | None = Field(None, ge=0, description="standard only; 0: never.")
    resample_until: Float | None = Field(None, ge=0, le=1, description="standard only.")
    resample_rows: int | None = Field(None, ge=1, description="standard only.")
    data: list[DataEntry] = Field(min_length=1)
    tokens: Tokens = Field(default_factory=Tokens)
    ctx_len: int = Field(_default("ctx_len"), ge=2)
    batch_size: int = Field(_default("batch_size"), ge=1)
    lr: Float = Field(_default("lr"), gt=0)
    warmup_frac: Float = Field(_default("warmup_frac"), ge=0, le=1)
    decay_frac: Float = Field(_default("decay_frac"), ge=0, le=1)
    grad_clip: Float = Field(_default("grad_clip"), gt=0)
    dead_tokens: int = Field(_default("dead_tokens"), ge=1)
    outlier_factor: Float = Field(_default("outlier_factor"), gt=1)
    seed: int = _default("seed")
    out: str = Field(min_length=1, description="Folder for the trained SAE.")
    cache_dir: str | None = Field(None, min_length=1, description="Activation cache folder.")
    checkpoint_dir: str | None = Field(None, min_length=1)
    checkpoint_every: int = Field(_default("checkpoint_every"), ge=1)
    storage_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="Dtype of the saved weights file (the SAE computes in float32)."
    )
    batch_windows: int = Field(_default("batch_windows"), ge=1)
    buffer_rows: int = Field(_default("buffer_rows"), ge=2)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Extra keys for the saved SAE's metadata."
    )

    @model_validator(mode="after")
    def _fits_architecture(self) -> TrainRecipe:
        for name in type(self).model_fields:
            owner = _only_for(name)
            if getattr(self, name) is not None and owner not in (None, self.architecture):
                raise located(name, f"only applies to architecture {owner}")
        k = self.k if self.k is not None else _default("k")
        if self.architecture == "topk" and k > self.d_sae:
            raise located("k", f"k={k} is larger than d_sae={self.d_sae}")
        return self


def parse_train_recipe(data: Any, *, source: str = "recipe") -> TrainRecipe:
    """Validate a training recipe given as plain data (e.g. from ``yaml.safe_load``)."""
    return validate_schema(TrainRecipe, data, what="training recipe", source=source)


def read_train_recipe(path: str | Path) -> Any:
    """The YAML data in ``path`` (not validated); unreadable or malformed files are one line."""
    return read_yaml(path, what="training recipe")


def load_train_recipe(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    check_files: bool = True,
    resume: bool = False,
) -> TrainConfig:
    """Read, validate and resolve a training recipe into a :class:`TrainConfig`.

    ``overrides`` replace top-level keys before validation (the CLI's flags), so a bad flag is
    reported like a bad key. With ``check_files`` a missing data file is an error here, before
    any model is loaded.
    """
    path = Path(path)
    data = read_train_recipe(path)
    if overrides and isinstance(data, dict):
        data = _merge(data, overrides)
    recipe = parse_train_recipe(data, source=str(path))
    return to_config(
        recipe, base=path.parent, source=str(path), check_files=check_files, resume=resume
    )


def to_config(
    recipe: TrainRecipe,
    *,
    base: str | Path = ".",
    source: str = "recipe",
    check_files: bool = True,
    resume: bool = False,
) -> TrainConfig:
    """The :class:`TrainConfig` a recipe describes; relative paths are resolved against
    ``base`` (the recipe's folder) after ``${VAR}`` expansion."""
    base = Path(base)

    def resolve(value: str | None, where: str) -> str | None:
        if value is None:
            return None
        expanded = Path(_expand(value, where, source)).expanduser()
        return str(expanded if expanded.is_absolute() else (base / expanded).resolve())

    sources: list[str | HFSource] = []
    for i, entry in enumerate(recipe.data):
        if entry.hf is not None:
            sources.append(
                HFSource(entry.hf, entry.split, entry.text_field, entry.config, entry.max_rows)
            )
            continue
        local = resolve(entry.path, f"data[{i}].path")
        if check_files and not Path(local).exists():
            raise SteerError(f"data[{i}].path: data file not found: {local}", where=source)
        sources.append(local)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    # Architecture-specific keys left out of the recipe keep TrainConfig's defaults.
    passthrough = {
        name: value
        for name, value in recipe.model_dump(exclude={"data", "tokens", "metadata"}).items()
        if name in known and value is not None
    }
    passthrough.pop("cache_dir", None)
    passthrough.pop("checkpoint_dir", None)
    return TrainConfig(
        **passthrough,
        out_dir=resolve(recipe.out, "out"),
        data=tuple(sources),
        # No weight anywhere: None, as a run from plain --data flags always had.
        data_weights=(
            tuple(e.weight for e in recipe.data)
            if any("weight" in e.model_fields_set for e in recipe.data)
            else None
        ),
        collect_tokens=recipe.tokens.collect,
        train_tokens=recipe.tokens.train,
        cache_dir=resolve(recipe.cache_dir, "cache_dir"),
        checkpoint_dir=resolve(recipe.checkpoint_dir, "checkpoint_dir"),
        resume=resume,
        extra_metadata=dict(recipe.metadata),
    )


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    # A nested mapping (tokens) is merged key by key, so --train-tokens keeps tokens.collect.
    out = dict(data)
    if overrides.get("architecture", out.get("architecture")) != out.get("architecture"):
        # Switching architecture drops the recipe's settings of the other one (flags stay,
        # so `--architecture standard --k 4` is still an error).
        keep = (None, overrides["architecture"])
        out = {key: value for key, value in out.items() if _only_for(key) in keep}
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
