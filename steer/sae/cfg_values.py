"""Checking the values of an SAE config file, each failure a one-line
:class:`~steer.errors.SteerError` naming the file: required keys, integers, strings, booleans,
dtypes, and settings steer does not run."""

from __future__ import annotations

from typing import Any

from steer.errors import SteerError
from steer.sae.config import canonical_dtype


def require(raw: dict[str, Any], key: str, where: str) -> Any:
    """``raw[key]``; a missing or null key is an error."""
    if raw.get(key) is None:
        raise SteerError(f"missing required key {key!r}", where=where)
    return raw[key]


def int_or_none(value: Any, key: str, where: str) -> int | None:
    """``value`` as an int (``32.0`` counts), or ``None``; anything else is an error."""
    # JSON writers sometimes emit 32.0 for an integer; a genuine fraction is an error.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SteerError(f"{key} must be an integer, got {value!r}", where=where)


def str_or_none(value: Any, key: str, where: str) -> str | None:
    """``value`` if it is a string or ``None``; anything else is an error."""
    if value is not None and not isinstance(value, str):
        raise SteerError(f"{key} must be a string, got {value!r}", where=where)
    return value


def dtype_value(value: Any, where: str) -> str:
    """The canonical name of a dtype (``"torch.float32"`` -> ``"float32"``)."""
    try:
        return canonical_dtype(value)
    except ValueError as exc:
        raise SteerError(str(exc), where=where) from None


def refuse(raw: dict[str, Any], key: str, allowed: Any, where: str) -> None:
    """Fail for a key whose value changes the computation in a way steer does not run."""
    value = raw.get(key, allowed)
    if value is not None and value != allowed:
        raise SteerError(f"{key} {value!r} is not supported (only {allowed!r})", where=where)


def bool_value(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    """``raw[key]`` (``default`` when absent), which must be true or false."""
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SteerError(f"{key} must be true or false, got {value!r}", where=where)
    return value


def number_or_none(value: Any, where: str) -> float | None:
    """``value`` as a float, or ``None``; anything else is an error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SteerError(f"norm_scaling_factor must be a number, got {value!r}", where=where)
    return float(value)


def positive(value: int | None, key: str, where: str, *, why: str = "") -> int:
    """``value`` if it is an integer of at least 1; ``why`` says when it must be."""
    if value is None or value < 1:
        raise SteerError(f"{key} must be a positive integer{why}, got {value!r}", where=where)
    return value
