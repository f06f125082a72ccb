"""Pieces every ``steer`` CLI module shares: the ``--debug`` option, the stderr console, and
prefixing errors with the file they came from. Command modules (``steer/cli/*.py``) import from
here, never from :mod:`steer.cli`, so that ``cli`` can import them without a cycle."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from steer.errors import SteerError
from steer.model import DEFAULT_MODEL

DEBUG_FLAG = "--debug"

# Markup off: prompts, labels, group names and file names reach the terminal as they are
# (a user's "[/bold]" must neither crash the printer nor restyle the output). Styled words
# are rich Text objects instead of markup.
err_console = Console(stderr=True, markup=False)


def out_console() -> Console:
    """The console for a command's results on stdout (markup off, as ``err_console``)."""
    return Console(markup=False)


def model_option(help: str = "Model the SAE belongs to.") -> str:
    """The ``--model`` option of the commands that read an SAE's model."""
    return typer.Option(DEFAULT_MODEL, "--model", help=help)


def device_option() -> str | None:
    """The ``--device`` option: checked as it is parsed, so a device this machine lacks
    (``cuda`` without a GPU, ``cuda:3``, a typo) is one line before anything loads."""
    return typer.Option(
        None,
        "--device",
        help="torch device (cpu, cuda, cuda:N, mps); default: cuda if there is one.",
        callback=_checked_device,
    )


def _checked_device(value: str | None) -> str | None:
    if value is None:
        return None
    from steer.model.load import check_device

    try:
        return check_device(value)
    except SteerError as exc:
        raise typer.BadParameter(str(exc)) from None


def texts_option(
    flag: str, help: str, *, what: str = "file", folders: bool = False, required: bool = True
) -> Any:
    """A ``Path`` option (repeatable when the parameter is a list) naming texts to read: a
    file, ``builtin:NAME`` for a text shipped with steer, or (``folders``) a folder of them.
    Checked as it is parsed, so a missing, empty or unreadable file is one line naming the
    option before any model loads; ``builtin:NAME`` arrives as the shipped file's path."""
    names = [flag, *(["-i"] if flag == "--input" else [])]
    return typer.Option(
        ... if required else None,
        *names,
        help=f"{help} `builtin:NAME` reads a text shipped with steer.",
        callback=lambda value: _checked_texts(value, what=what, folders=folders),
    )


def _checked_texts(value: Any, *, what: str, folders: bool) -> Any:
    from steer.corpus.documents import source_files
    from steer.corpus.shipped import resolve_text_path
    from steer.io import check_text_file

    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    try:
        paths = [resolve_text_path(str(item)) for item in items]
        for path in paths:
            if not path.exists():
                raise SteerError(f"{what} not found", where=str(path))
            if path.is_dir() and not folders:
                raise SteerError(f"is a folder, where a {what} is needed", where=str(path))
        for path in source_files(paths):  # a folder: each text file in it
            check_text_file(path, what=what)
    except SteerError as exc:
        raise typer.BadParameter(str(exc)) from None
    return paths if isinstance(value, list) else paths[0]


def dashboard_option(page: str) -> list[str]:
    """The ``--dashboard`` option of the commands whose HTML ``page`` names features."""
    return typer.Option(
        None,
        "--dashboard",
        metavar="[SAE=]DIR_OR_URL",
        help=f"Link {page}'s features to this feature dashboard (`steer features dashboard`; "
        "a folder or a URL). Repeat as SAE=DIR_OR_URL for several SAEs.",
    )


def debug_option() -> bool:
    """The ``--debug`` option every command takes (``main`` reads it from argv)."""
    return typer.Option(False, DEBUG_FLAG, help="Show tracebacks instead of one-line errors.")


@contextlib.contextmanager
def about(path: Path):
    """Prefix errors found while checking or loading a file's parts with the file's path."""
    try:
        yield
    except SteerError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise SteerError(str(exc), where=str(path)) from exc
