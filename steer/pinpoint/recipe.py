"""The pinpoint recipe: which model and SAEs, which prompts, which metric, how to attribute.

Parsed into a frozen pydantic model with ``extra="forbid"``, like steering recipes
(:mod:`steer.steering.recipe`), with the same one-line errors (``metric.logit_diff.foil: required field
is missing``). SAEs are named with the steering recipe's :class:`~steer.steering.recipe.SAESpec`.
Parsing never loads the model; that targets are single tokens is checked once the tokenizer is
loaded (:func:`steer.pinpoint.metric.resolve_metric`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from steer.corpus.shipped import is_builtin, resolve_text_path
from steer.errors import SteerError
from steer.io import read_yaml
from steer.model import DEFAULT_MODEL
from steer.schema import StrictModel, located, validate_schema
from steer.steering.recipe import (
    REMOTE_HELP,
    RemoteTarget,
    SAESpec,
    resolve_sae_spec_path,
    strings_as_text_items,
    unique_sae_ids,
)

Ablation = Literal["zero", "mean"]
Rank = Literal["decrease", "increase", "magnitude"]


class LogitDiffSpec(StrictModel):
    """``logit[target] - logit[foil]`` at the last prompt position."""

    target: str = Field(min_length=1)
    foil: str = Field(min_length=1)


class LogprobSpec(StrictModel):
    """``log p(target)`` at the last prompt position."""

    target: str = Field(min_length=1)


class MetricSpec(StrictModel):
    """Exactly one of ``logit_diff`` or ``logprob``."""

    logit_diff: LogitDiffSpec | None = None
    logprob: LogprobSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MetricSpec:
        given = [k for k in ("logit_diff", "logprob") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of logit_diff or logprob")
        return self


class PinpointPrompt(StrictModel):
    """A prompt; ``target``/``foil`` override the metric's tokens for this prompt only (for
    tasks whose answer differs per prompt, such as the stereotypical pronoun of an
    occupation, or the indirect object's name in IOI)."""

    text: str = Field(min_length=1)
    target: str | None = Field(None, min_length=1)
    foil: str | None = Field(None, min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is blank")
        return value


class PinpointRecipe(StrictModel):
    """A whole pinpoint task."""

    model: str = DEFAULT_MODEL
    remote: RemoteTarget = Field(False, description=REMOTE_HELP)
    saes: list[SAESpec] = Field(min_length=1)
    prompts: list[PinpointPrompt] = Field(
        min_length=1, description="Prompts; the metric reads the last position."
    )
    counterfactuals: list[str] | None = Field(
        None,
        description="One per prompt, same token count: patch towards these activations instead "
        "of ablating.",
    )
    chat: bool = Field(False, description="Wrap prompts in the chat template.")
    metric: MetricSpec
    method: str = Field("attribution_patching", min_length=1, description="Attribution method.")
    steps: int = Field(8, ge=1, le=256, description="Integrated-gradients steps.")
    top_k: int = Field(50, ge=1, description="Top-ranked nodes to verify by real ablation.")
    curve_max: int | None = Field(
        None, ge=1, description="Curve of metric vs ablated nodes up to this many; default top_k."
    )
    ablation: Ablation = Field("zero", description="zero, or mean over the prompts' positions.")
    rank: Rank = Field(
        "decrease",
        description="Order: ablations that lower the metric most first, raise it most, or |effect|.",
    )
    side_effect_data: str | None = Field(
        None,
        description="Unrelated text for the loss check: a file, or builtin:NAME (shipped text).",
    )
    side_effect_tokens: int = Field(4096, ge=128)
    neuron_baseline: bool = Field(True, description="Also pinpoint residual-stream neurons.")
    baselines: list[Literal["pca", "ica"]] = Field(
        default_factory=list,
        description="Also pinpoint PCA and/or ICA directions fitted on baseline_data.",
    )
    baseline_components: int = Field(64, ge=1, description="Directions per PCA/ICA baseline.")
    baseline_data: str = Field(
        "builtin:wikitext2-excerpt", description="Text the PCA/ICA baselines are fitted on."
    )
    baseline_tokens: int = Field(8192, ge=128, description="Tokens of baseline_data to fit on.")
    batch_size: int = Field(32, ge=1, description="Prompts per forward pass.")

    @field_validator("prompts", mode="before")
    @classmethod
    def _strings_are_prompts(cls, value: Any) -> Any:
        return strings_as_text_items(value)

    @field_validator("side_effect_data", "baseline_data")
    @classmethod
    def _shipped_text_exists(cls, value: str | None) -> str | None:
        # An unknown shipped name is an error here, naming the field, before anything loads.
        if value is not None and is_builtin(value):
            try:
                resolve_text_path(value)
            except SteerError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("counterfactuals")
    @classmethod
    def _no_blank(cls, value: list[str] | None) -> list[str] | None:
        for i, text in enumerate(value or []):
            if not text.strip():
                raise ValueError(f"item {i} is blank")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PinpointRecipe:
        unique_sae_ids(self.saes)
        if self.metric.logprob is not None:
            for i, prompt in enumerate(self.prompts):
                if prompt.foil is not None:
                    raise located(f"prompts[{i}].foil", "a logprob metric has no foil")
        if self.counterfactuals is not None and len(self.counterfactuals) != len(self.prompts):
            raise located(
                "counterfactuals",
                f"{len(self.counterfactuals)} counterfactual prompts for {len(self.prompts)} "
                "prompts (give one per prompt)",
            )
        return self


def parse_pinpoint_recipe(data: Any, *, source: str = "recipe") -> PinpointRecipe:
    """Validate a pinpoint recipe given as plain data."""
    return validate_schema(PinpointRecipe, data, what="pinpoint recipe", source=source)


def load_pinpoint_recipe(path: str | Path) -> PinpointRecipe:
    """Read and validate a YAML pinpoint recipe. SAE paths and ``side_effect_data`` are relative
    to the recipe file; ``side_effect_data: builtin:NAME`` is a text shipped with steer
    (:mod:`steer.corpus.shipped`)."""
    path = Path(path)
    data = read_yaml(path, what="pinpoint recipe")
    recipe = parse_pinpoint_recipe(data, source=str(path))
    update: dict[str, Any] = {"saes": [resolve_sae_spec_path(s, path.parent) for s in recipe.saes]}
    if recipe.side_effect_data is not None:
        update["side_effect_data"] = str(resolve_text_path(recipe.side_effect_data, path.parent))
    return recipe.model_copy(update=update)
