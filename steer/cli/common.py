"""Pieces every ``steer`` CLI module shares: the ``--debug`` option, the stderr console, and
prefixing errors with the file they came from. Command modules (``steer/cli/*.py``) import from
here, never from :mod:`steer.cli`, so that ``cli`` can import them without a cycle."""

from __future__ import annotations

import contextlib
from pathlib import Path

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
