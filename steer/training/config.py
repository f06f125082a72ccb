"""Every setting of an SAE training run, declared once.

:class:`TrainConfig` is at the same time the schema of a training recipe (YAML, strict like
every steer schema), what the trainer reads, and where ``steer train``'s flags and their help
come from (:func:`flag_fields`): a setting's type, default, bounds and description are written
here and nowhere else.

Settings that belong to some architectures say so (:func:`owner`): ``k``, ``k_aux`` and
``auxk_coef`` are ``topk``'s and ``batchtopk``'s, ``l1_*`` and ``resample_*`` are
``standard``'s; giving one to another architecture is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic.fields import FieldInfo

from steer.corpus.documents import DataSource, HFSource
from steer.model import DEFAULT_MODEL
from steer.model.sites import Hook
from steer.schema import StrictModel, located

ARCHITECTURES = ("topk", "batchtopk", "standard")
TOPK_FAMILY = ("topk", "batchtopk")  # the architectures that read k, k_aux and auxk_coef


def _yaml_float(value: Any) -> Any:
    # YAML 1.1 reads 2e-3 (no dot) as a string; accept any numeric text as a float.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_yaml_float)]


def _setting(default: Any, description: str, *, flag: str | None = None,
             only: tuple[str, ...] | None = None, **bounds: Any) -> Any:  # fmt: skip
    """A declared setting: ``flag`` makes it a ``steer train --FLAG`` option, ``only`` ties it
    to those architectures."""
    extra = {k: v for k, v in (("flag", flag), ("only", only)) if v is not None}
    return Field(default, description=description, json_schema_extra=extra or None, **bounds)


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

    def source(self) -> DataSource:
        """What the corpus readers take: the path, or an :class:`HFSource`."""
        if self.hf is not None:
            return HFSource(self.hf, self.split, self.text_field, self.config, self.max_rows)
        return str(self.path)


class Tokens(StrictModel):
    """How many tokens to run through the model, and how many activations to train on."""

    collect: int = _setting(
        1_000_000, "Unique window tokens to collect.", flag="collect-tokens", ge=1
    )
    train: int = _setting(2_000_000, "Activations the optimizer sees.", flag="train-tokens", ge=1)


class TrainConfig(StrictModel):
    """A whole training run: what a training recipe holds, after ``${VAR}`` expansion (paths
    are as given; :func:`steer.training.recipe.load_train_recipe` makes them absolute)."""

    model: str = _setting(DEFAULT_MODEL, "Model to read activations from.", flag="model")
    layer: int = _setting(12, "The block (with --site).", flag="layer", ge=0)
    site: Literal["resid_pre", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post"] = (
        _setting(
            "resid_post",
            "Where the SAE reads: resid_post (the block's output), resid_pre, resid_mid, attn_out, "
            "mlp_out or z.",
            flag="site",
        )
    )
    architecture: Literal["topk", "batchtopk", "standard"] = _setting(
        "topk",
        "SAE architecture: topk, batchtopk (k per token on average; saved as JumpReLU) or "
        "standard (ReLU + L1).",
        flag="architecture",
    )
    d_sae: int = _setting(4608, "Number of features.", flag="d-sae", ge=1)
    k: int = _setting(
        32, "Active features per token (batchtopk: on average).", flag="k", only=TOPK_FAMILY, ge=1
    )
    k_aux: int | None = _setting(
        None, "Dead latents in the AuxK loss (default: d_in // 2).", only=TOPK_FAMILY, ge=1
    )
    auxk_coef: Float = _setting(1 / 32, "Weight of the AuxK loss.", only=TOPK_FAMILY, ge=0)
    # Anthropic's April 2024 update uses 5 (MSE summed over d_in, inputs at norm sqrt(d_in)).
    l1_coefficient: Float = _setting(
        5.0, "L1 weight on f_i * ||W_dec_i||.", flag="l1-coefficient", only=("standard",), ge=0
    )
    l1_warmup_frac: Float = _setting(
        0.05, "Part of training over which the L1 weight ramps up.", only=("standard",), ge=0, le=1
    )
    resample_every: int = _setting(
        250, "Steps between dead-feature resamplings (0: never).", only=("standard",), ge=0
    )
    resample_until: Float = _setting(
        0.5, "Resample only in this first part of training.", only=("standard",), ge=0, le=1
    )
    resample_rows: int = _setting(
        32_768, "Cached activations that seed resampled features.", only=("standard",), ge=1
    )
    data: list[DataEntry] = Field(min_length=1, description="Text sources to train on.")
    tokens: Tokens = Field(default_factory=Tokens)
    ctx_len: int = _setting(128, "Tokens per window.", ge=2)
    batch_size: int = _setting(2048, "Activations per step.", flag="batch-size", ge=1)
    # Adam learning rate in the scaled space. Short CPU runs want more than the scaling-law
    # 2e-4 / sqrt(d_sae / 2**14) (= 3.8e-4 at 4608): on SmolLM2 L12, 400 steps of 2048 gave
    # held-out EV .73 / .78 / .81 / .82 at 4e-4 / 1e-3 / 2e-3 / 4e-3 (4e-3 left 1% dead).
    lr: Float = _setting(2e-3, "Adam learning rate.", flag="lr", gt=0)
    warmup_frac: Float = _setting(0.05, "Linear learning-rate warm-up.", ge=0, le=1)
    decay_frac: Float = _setting(0.2, "Linear decay to 0 over the last part.", ge=0, le=1)
    grad_clip: Float = _setting(1.0, "Gradient norm clip.", gt=0)
    dead_tokens: int = _setting(
        250_000, "A latent is dead after this many tokens without firing.", ge=1
    )
    outlier_factor: Float = _setting(
        10.0, "Drop positions whose norm exceeds this x the running median.", gt=1
    )
    seed: int = _setting(0, "Seed for the data mix and the initialisation.", flag="seed")
    out: str = Field(min_length=1, description="Folder for the trained SAE (SAELens format).")
    cache_dir: str | None = Field(
        None, min_length=1, description="Activation cache folder (default: in the steer cache)."
    )
    checkpoint_dir: str | None = Field(
        None, min_length=1, description="Checkpoint folder (default: in the steer cache)."
    )
    checkpoint_every: int = _setting(
        200, "Steps between checkpoints.", flag="checkpoint-every", ge=1
    )
    # float16 halves the file; the SAE still computes in float32 (cfg.json's dtype), which is
    # how the shipped SAE fits in 25 MB.
    storage_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="Dtype of the saved weights file (the SAE computes in float32)."
    )
    batch_windows: int = _setting(16, "Windows per forward pass when collecting.", ge=1)
    buffer_rows: int = _setting(1 << 17, "Rows of the shuffling buffer.", ge=2)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Extra keys for the saved SAE's metadata."
    )

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # `k: null` in a recipe (or a flag switched off) leaves an architecture's setting at its
        # default, as if the key were not there.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and owner(k) is not None)}
        return data

    @model_validator(mode="after")
    def _fits_architecture(self) -> TrainConfig:
        for name in self.model_fields_set:
            if not applies(name, self.architecture):
                only = " or ".join(owner(name) or ())
                raise located(name, f"only applies to architecture {only}")
        if self.architecture in TOPK_FAMILY and self.k > self.d_sae:
            raise located("k", f"k={self.k} is larger than d_sae={self.d_sae}")
        return self

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens.train // self.batch_size)

    def hook(self) -> Hook:
        """The site the SAE reads: ``site`` at block ``layer``."""
        return Hook.at(self.site, self.layer)

    def sources(self) -> tuple[DataSource, ...]:
        """The data as the corpus readers take it (paths and :class:`HFSource` datasets)."""
        return tuple(entry.source() for entry in self.data)

    def weights(self) -> tuple[float, ...] | None:
        """Each source's share of the collected tokens; ``None`` when no entry gives one."""
        if not any("weight" in e.model_fields_set for e in self.data):
            return None
        return tuple(e.weight for e in self.data)


def owner(name: str) -> tuple[str, ...] | None:
    """The architectures a setting belongs to, or ``None`` for one every run reads."""
    field = TrainConfig.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    return tuple(extra["only"]) if isinstance(extra, dict) and "only" in extra else None


def applies(name: str, architecture: str | None) -> bool:
    """Whether a run of ``architecture`` reads the setting ``name``."""
    only = owner(name)
    return only is None or architecture in only


def flag_fields() -> Iterator[tuple[str, str, FieldInfo]]:
    """``(flag, dotted setting, field)`` for every setting ``steer train`` takes as a flag,
    in declaration order; e.g. ``("train-tokens", "tokens.train", ...)``."""
    for prefix, schema in (("", TrainConfig), ("tokens.", Tokens)):
        for name, field in schema.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and "flag" in extra:
                yield str(extra["flag"]), prefix + name, field
