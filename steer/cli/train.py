"""``steer train``: train an SAE from a YAML recipe, flags, or both (flags override keys).

The setting flags (``--layer``, ``--d-sae``, ``--train-tokens``, ...) are not written here:
they, their types and their help (with the real defaults) come from the settings declared in
:class:`steer.training.config.TrainConfig`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import typing
from pathlib import Path
from typing import Any

import typer

from steer.cli.common import about, debug_option, texts_option
from steer.errors import SteerError


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``steer`` app."""
    app.command("train")(_with_setting_flags(train))


def train(
    recipe: Path | None = typer.Argument(
        None, metavar="[RECIPE]", help="Training recipe (YAML); flags given override its keys."
    ),
    data: list[Path] = texts_option(
        "--data",
        "Text files or folders to train on (replaces the recipe's data); repeat for several.",
        what="data file",
        folders=True,
        required=False,
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder for the trained SAE (SAELens)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    debug: bool = debug_option(),
    **settings: Any,
) -> None:
    """Train an SAE (topk, batchtopk or standard) from a YAML recipe or flags (checkpoints;
    --resume).

    Under ``torchrun`` the processes share the collection and split every batch (DDP); rank 0
    writes the checkpoints and the SAE, which equals the one a single process trains.
    """
    from steer.distributed import quiet_unless_main, world
    from steer.training.recipe import load_train_recipe, parse_train_recipe, resolve_paths
    from steer.training.run import train_sae

    overrides = _overrides(settings)
    # Paths on the command line are relative to the working directory, not the recipe.
    if data:
        overrides["data"] = [{"path": os.path.abspath(p)} for p in data]
    if out is not None:
        overrides["out"] = os.path.abspath(out)
    if recipe is not None:
        config = load_train_recipe(recipe, overrides)
        where = about(recipe)
    else:
        if not data or out is None:
            raise SteerError("give a training RECIPE, or --data and --out")
        config = resolve_paths(
            parse_train_recipe(overrides, source="command line"), source="command line"
        )
        where = contextlib.nullcontext()
    quiet_unless_main(world())
    with where:
        path = train_sae(config, resume=resume)
    if world().is_main:  # under torchrun, one line, not one per process
        typer.echo(f"saved {path}")


def _setting_flags() -> dict[str, tuple[str, inspect.Parameter]]:
    """Parameter name -> (dotted setting, typer parameter), one per declared flag."""
    from steer.training.config import flag_fields

    out = {}
    for flag, dotted, field in flag_fields():
        name = flag.replace("-", "_")
        default = field.default
        shown = f"{default:g}" if isinstance(default, float) else default
        extra = field.json_schema_extra or {}
        only = f"{extra['only']} only; " if "only" in extra else ""
        text = f"{field.description.rstrip('.')} ({only}default: {shown})."
        option = typer.Option(None, f"--{flag}", help=text, callback=_checked_by(field))
        annotation = _option_type(field.annotation) | None
        out[name] = (
            dotted,
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            ),
        )
    return out


def _checked_by(field: Any):
    """A typer callback that checks a flag's value against its setting's declared bounds as
    it is parsed (``--d-sae 0``: one line naming the flag, before anything loads)."""
    from typing import Annotated

    from pydantic import TypeAdapter, ValidationError

    annotation = field.annotation
    if field.metadata:  # bounds such as ge=1 (Annotated needs at least one)
        annotation = Annotated.__class_getitem__((annotation, *field.metadata))
    adapter = TypeAdapter(annotation)

    def check(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number (got {value})")
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            raise typer.BadParameter(exc.errors()[0]["msg"]) from None
        return value

    return check


def _option_type(annotation: Any) -> type:
    """The command-line type of a setting: a ``Literal`` of strings reads as ``str``."""
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def _with_setting_flags(command):
    """A wrapper of ``command`` whose signature (what typer reads) has one keyword option per
    declared flag in place of ``**settings``."""

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> None:
        command(**kwargs)

    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    flags = [param for _, param in _setting_flags().values()]
    # Setting flags go before --resume and --debug.
    params = [*fixed[:3], *flags, *(p.replace(kind=p.KEYWORD_ONLY) for p in fixed[3:])]
    with_flags.__signature__ = signature.replace(parameters=params)
    with_flags.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return with_flags


def _overrides(settings: dict[str, Any]) -> dict[str, Any]:
    """The flags given, as recipe keys (``train_tokens=4096`` -> ``{"tokens": {"train": 4096}}``)."""
    flags = _setting_flags()
    overrides: dict[str, Any] = {}
    for name, value in settings.items():
        if value is None:
            continue
        *parents, key = flags[name][0].split(".")
        target = overrides
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    return overrides
