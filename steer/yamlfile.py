"""Read a YAML file for one of steer's schemas (steering, training and pinpoint recipes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from steer.errors import SteerError


def read_yaml(path: str | Path, *, what: str = "recipe") -> Any:
    """The data in the YAML file ``path``, not yet validated.

    A missing or unreadable file, or malformed YAML, is a one-line :class:`SteerError`;
    malformed YAML names the line and column (``recipe.yaml:3:7: malformed YAML: ...``).
    ``what`` names the kind of file in the messages.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SteerError(f"{what} file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerError(f"cannot read the {what}: {exc}", where=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SteerError(f"malformed YAML: {problem}", where=at) from None
