"""The one validator behind every YAML schema steer reads (steering, training and pinpoint
recipes): strict pydantic models whose errors become one line naming the field path.

A schema subclasses :class:`StrictModel` (unknown keys and wrong types are errors, values are
frozen). :func:`validate_schema` turns the first validation problem into a
:class:`~steer.errors.SteerError` such as
``recipe.yaml: interventions[1].features[0]: feature 9999 is out of range (SAE res12 has 8192)``;
a validator that knows an absolute field path raises :func:`located` instead of ``ValueError``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from steer.errors import SteerError

_Model = TypeVar("_Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every recipe schema: unknown keys, wrong types and non-finite numbers (NaN,
    infinity: they would pass every bound and make a run "succeed" on nonsense) are errors;
    values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _LocatedError(ValueError):
    """A validation error that already knows its absolute field path."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(message)


def located(where: str, message: str) -> _LocatedError:
    return _LocatedError(where, message)


def format_location(loc: tuple[Any, ...]) -> str:
    """``("interventions", 1, "features", 0)`` -> ``interventions[1].features[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after[_one_source(), SAESpec]",):
            out += f".{part}" if out else str(part)
    return out or "recipe"


def first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _LocatedError):
        return ctx_error.where, str(ctx_error)
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "(" in p))
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] == "too_short" and (err.get("ctx") or {}).get("min_length") == 1:
        message = "must not be empty" if err["loc"] != ("prompts",) else "the prompt list is empty"
    message = message.removeprefix("Value error, ")
    return format_location(loc), message


def validate_schema(schema: type[_Model], data: Any, *, what: str, source: str) -> _Model:
    """``data`` (e.g. from ``yaml.safe_load``) validated against the pydantic ``schema``.

    Anything wrong is a one-line :class:`SteerError` naming the first problem's field path,
    ``file: interventions[0].features[1]: reason (and 2 more problems)``; ``what`` names the
    kind of file ("recipe", "training recipe") when the data is not a mapping at all.
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SteerError(f"a {what} must be a mapping of keys, got {kind}", where=source)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        where, message = first_error(exc)
        extra = exc.error_count() - 1
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        raise SteerError(f"{where}: {message}{more}", where=source) from None
