"""The YAML recipe schema: what to load, what to generate, which features to edit or watch.

A recipe is parsed into a frozen pydantic model with ``extra="forbid"``: an unknown key or a
wrong type is an error that names the field path, e.g.
``interventions[1].features[0]: feature 9999 is out of range (SAE res12 has 8192)``.
Parsing never loads the model, so a bad recipe fails in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, field_validator, model_validator

from steer.io import read_yaml
from steer.model import DEFAULT_MODEL
from steer.model.remote import parse_remote
from steer.schema import StrictModel, located, validate_schema

Positions = Literal["prompt", "generated", "all"]


def _feature_ref(value: Any) -> int | str:
    # Strictly an int or a str: YAML's 1.0, true or null are not feature names.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a feature is an id (integer) or a label (string), got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError("Input should be greater than or equal to 0")
    if isinstance(value, str) and not value.strip():
        raise ValueError("a feature label must not be empty")
    return value


# A feature id, or the name of a feature in the labels.json beside the SAE; labels become ids
# when the recipe is checked against its SAEs (steer.steering.check.resolve_features).
FeatureRef = Annotated[int | str, PlainValidator(_feature_ref, json_schema_input_type=int | str)]

# Where a recipe's traces run (steer.model.remote): false, true (NDIF), "local" or a URL.
RemoteTarget = Annotated[
    bool | str, PlainValidator(parse_remote, json_schema_input_type=bool | str)
]
REMOTE_HELP = (
    "Run the traces through nnsight's remote backend: true (the configured NDIF host), a server "
    "URL, or local (serialised as if sent, run here)."
)


class SAESpec(StrictModel):
    """One SAE to attach. Give exactly one of ``path``, ``builtin``, ``hf`` or ``release``
    (with ``sae_id``)."""

    id: str = Field(min_length=1, description="Name that interventions and monitors refer to.")
    path: str | None = Field(None, description="Local SAE folder (SAELens or sparsify format).")
    builtin: str | None = Field(None, description="Name of an SAE shipped with steer.")
    hf: str | None = Field(
        None, description="Hugging Face repo id holding SAELens-format SAEs (needs network)."
    )
    subfolder: str | None = Field(None, description="Folder inside the `hf` repo.")
    release: str | None = Field(
        None,
        min_length=1,
        description="SAELens release name (e.g. gemma-scope-2b-pt-res-canonical); needs sae_id.",
    )
    sae_id: str | None = Field(
        None,
        min_length=1,
        description="The SAE's id in the release (layer_20/width_16k/canonical).",
    )
    norm_scaling_factor: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Input scale of an `expected_average_only_in` SAE the release list lacks.",
    )
    allow_other_model: bool = Field(
        False, description="Attach even though the SAE's cfg names another model."
    )
    site: (
        Literal["resid_pre", "z", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post"] | None
    ) = Field(None, description="Where the SAE reads and writes; default: its cfg's hook names.")
    layer: int | None = Field(
        None, ge=0, description="The block (with `site`); default: the SAE's cfg."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SAESpec:
        sources = ("path", "builtin", "hf", "release")
        given = [k for k in sources if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of path, builtin, hf or release"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.subfolder is not None and self.hf is None:
            raise ValueError("subfolder is only meaningful with hf")
        if (self.release is None) != (self.sae_id is None):
            raise ValueError("release and sae_id go together (SAELens names an SAE by both)")
        return self

    @property
    def remote(self) -> bool:
        """Whether the SAE comes from the Hugging Face hub (``hf`` or ``release``)."""
        return self.hf is not None or self.release is not None


class GenerationSpec(StrictModel):
    """How to generate. ``temperature: 0`` means greedy decoding."""

    max_new_tokens: int = Field(40, ge=1, le=8192)
    min_new_tokens: int = Field(0, ge=0, description="Suppress end-of-sequence before this many.")
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = 0
    chat: bool | None = Field(
        None, description="Wrap prompts in the chat template; default: if the model has one."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")


class InterventionSpec(StrictModel):
    """Edit SAE features with an intervention plugin on the chosen positions."""

    plugin: str = Field(min_length=1, description="Intervention name: ablate, clamp, scale, ...")
    sae: str = Field(min_length=1, description="Id of an SAE in `saes`.")
    features: list[FeatureRef] = Field(min_length=1)
    value: float | None = Field(None, description="Parameter of the intervention, if it takes one.")
    positions: Positions = "all"


MONITOR_ACTIONS = ("log", "warn", "stop")


class ResponseSpec(StrictModel):
    """A conditional intervention: once a monitor fires on a prompt, apply this intervention
    to that prompt from the firing token on (the firing token included)."""

    plugin: str = Field(min_length=1, description="Intervention name: ablate, clamp, scale, ...")
    features: list[FeatureRef] | None = Field(
        None, min_length=1, description="Features to edit; default: the monitor's own."
    )
    value: float | None = Field(None, description="Parameter of the intervention, if it takes one.")


class MonitorSpec(StrictModel):
    """Watch a group of SAE features during generation, report events, and act on them.

    ``action`` is what happens on a prompt the first time the group fires there: ``log``
    (record the events), ``warn`` (also warn on the terminal as it happens), ``stop`` (end
    that prompt's generation at the firing token; the rest of the batch goes on), or a
    mapping ``{plugin: ablate}`` -- an intervention from the firing token on.

    Any other key is a setting of the monitor ``plugin`` (the built-in ``threshold`` takes
    ``threshold: 5.0``). Settings are checked against what the plugin declares, with its
    defaults filled in, when the recipe is checked against the installed plugins
    (:func:`steer.steering.check.check_recipe`); after that they read as attributes.
    """

    # Extra keys are the monitor plugin's settings; check_recipe refuses the unknown ones.
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)

    plugin: str = "threshold"
    sae: str = Field(min_length=1)
    features: list[FeatureRef] = Field(min_length=1)
    name: str | None = Field(None, min_length=1, description="The group's name in events.")
    positions: Positions = "all"
    action: Literal["log", "warn", "stop"] | ResponseSpec = "log"

    @field_validator("action", mode="before")
    @classmethod
    def _known_action(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in MONITOR_ACTIONS:
            raise ValueError(
                f"unknown action {value!r} (known: {', '.join(MONITOR_ACTIONS)}, or a mapping "
                "{plugin: NAME} for an intervention from the firing token on)"
            )
        if not isinstance(value, str | dict | ResponseSpec):
            raise ValueError(
                f"an action is one of {', '.join(MONITOR_ACTIONS)} or a mapping "
                f"{{plugin: NAME}}, got {value!r}"
            )
        return value

    @property
    def settings(self) -> dict[str, Any]:
        """The monitor plugin's settings (every key beyond the common ones)."""
        return dict(self.model_extra or {})

    @property
    def action_name(self) -> str:
        """``log``, ``warn``, ``stop``, or the plugin name of a conditional intervention."""
        return self.action if isinstance(self.action, str) else self.action.plugin


class PromptSpec(StrictModel):
    """A prompt, optionally with interventions of its own (added to the recipe's)."""

    text: str = Field(min_length=1)
    interventions: list[InterventionSpec] = Field(default_factory=list)
    inherit_interventions: bool = Field(
        True, description="Also apply the recipe-level interventions to this prompt."
    )


class Recipe(StrictModel):
    """A whole steering recipe."""

    model: str = DEFAULT_MODEL
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None, description="The model's weights' dtype; default: the model's own."
    )
    device_map: Literal["auto"] | None = Field(
        None, description="Spread a Hugging Face model over the GPUs (accelerate's device_map)."
    )
    remote: RemoteTarget = Field(False, description=REMOTE_HELP)
    saes: list[SAESpec] = Field(default_factory=list)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    prompts: list[PromptSpec] = Field(min_length=1)
    interventions: list[InterventionSpec] = Field(default_factory=list)
    monitors: list[MonitorSpec] = Field(default_factory=list)

    @field_validator("prompts", mode="before")
    @classmethod
    def _strings_are_prompts(cls, value: Any) -> Any:
        return strings_as_text_items(value)

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        ids = unique_sae_ids(self.saes)
        for where, step in self.steps():
            if step.sae not in ids:
                known = ", ".join(repr(x) for x in ids) or "none"
                raise located(f"{where}.sae", f"unknown SAE {step.sae!r} (known: {known})")
        names = self.group_names()
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise located(f"monitors[{i}].name", f"two monitors are named {name!r}")
        return self

    def group_names(self) -> list[str]:
        """What events call each monitor: its ``name``, else ``monitors[i]``."""
        return [m.name or f"monitors[{i}]" for i, m in enumerate(self.monitors)]

    def steps(self) -> list[tuple[str, InterventionSpec | MonitorSpec]]:
        """Every intervention and monitor with its field path, for validation messages."""
        found: list[tuple[str, InterventionSpec | MonitorSpec]] = []
        found += [(f"interventions[{i}]", s) for i, s in enumerate(self.interventions)]
        for p, prompt in enumerate(self.prompts):
            found += [
                (f"prompts[{p}].interventions[{i}]", s) for i, s in enumerate(prompt.interventions)
            ]
        found += [(f"monitors[{i}]", s) for i, s in enumerate(self.monitors)]
        return found

    def interventions_for(self, prompt: PromptSpec) -> list[InterventionSpec]:
        """The interventions that apply to one prompt (the recipe's, then its own)."""
        inherited = list(self.interventions) if prompt.inherit_interventions else []
        return inherited + list(prompt.interventions)

    def sae(self, sae_id: str) -> SAESpec:
        return next(s for s in self.saes if s.id == sae_id)


def strings_as_text_items(value: Any) -> Any:
    """A prompt list where a plain string ``"..."`` stands for ``{"text": "..."}``."""
    if isinstance(value, list):
        return [{"text": p} if isinstance(p, str) else p for p in value]
    return value


def unique_sae_ids(saes: list[SAESpec]) -> list[str]:
    """The ids of a recipe's ``saes``, in order; a repeated id is an error at its field."""
    ids = [s.id for s in saes]
    for i, sae_id in enumerate(ids):
        if ids.index(sae_id) != i:
            raise located(f"saes[{i}].id", f"duplicate SAE id {sae_id!r}")
    return ids


def parse_recipe(data: Any, *, source: str = "recipe") -> Recipe:
    """Validate a recipe given as plain data (e.g. from ``yaml.safe_load``)."""
    return validate_schema(Recipe, data, what="recipe", source=source)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file; every problem is a one-line :class:`SteerError`."""
    path = Path(path)
    data = read_yaml(path)
    recipe = parse_recipe(data, source=str(path))
    return recipe.model_copy(
        update={"saes": [resolve_sae_spec_path(s, path.parent) for s in recipe.saes]}
    )


def resolve_sae_spec_path(spec: SAESpec, base: Path) -> SAESpec:
    """SAE paths in a recipe are relative to the recipe file, not to the working directory."""
    if spec.path is None or Path(spec.path).expanduser().is_absolute():
        return spec
    return spec.model_copy(update={"path": str((base / spec.path).resolve())})
