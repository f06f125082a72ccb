"""The ``steer`` command line. Bad input prints one line and exits with code 2 (``--debug``
shows the traceback instead).

Each command group lives in its own module with a ``register(app)`` function; :func:`build_app`
calls them in turn, then lets plugins add their own commands through the
``steer_register_commands`` hook (a plugin that fails there is reported, never fatal).
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

import typer
from rich.text import Text
from typer.exceptions import TyperException

from steer.cli.common import DEBUG_FLAG, err_console
from steer.errors import SteerError

log = logging.getLogger(__name__)

# The modules of steer's own commands, in the order `steer --help` lists them.
COMMAND_MODULES = (
    "run",
    "check",
    "train",
    "sae",
    "features",
    "autointerp",
    "monitor",
    "probe",
    "pinpoint",
    "eval",
    "serve",
    "plugins",
)


def build_app(pm: Any = None) -> typer.Typer:
    """The ``steer`` app: steer's commands, plus those the plugins of ``pm`` register."""
    app = typer.Typer(
        help="Steer language models through sparse-autoencoder features.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        import_module(f"steer.cli.{name}").register(app)
    if pm is not None:
        pm.register_commands(app)
    return app


def _plugin_manager() -> Any:
    from steer.plugins.manager import get_plugin_manager

    return get_plugin_manager()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    empty = empty_argument(argv)
    if empty is not None:
        err_console.print(Text("error:", "red"), empty, highlight=False, soft_wrap=True)
        sys.exit(2)
    try:
        app = build_app(_plugin_manager())
        rc = app(args=argv, prog_name="steer", standalone_mode=False)
    except TyperException as exc:  # usage errors (typer's click): one line, exit 2
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        line = f"{where}{exc.format_message()}{hint}"
        err_console.print(Text("error:", "red"), line, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        label, message, code = describe_failure(exc)
        err_console.print(Text(label, "red"), message, highlight=False, soft_wrap=True)
        sys.exit(code)
    sys.exit(rc if isinstance(rc, int) else 0)


def empty_argument(argv: list[str]) -> str | None:
    """The one line for an empty (or blank) argument, else ``None``. No steer option or argument
    takes an empty value; an empty one is usually an unset shell variable (``--out "$OUT"``),
    which as a path would mean the working directory."""
    for i, arg in enumerate(argv):
        if arg.strip():
            continue
        before = argv[i - 1] if i else ""
        if before.startswith("-") and "=" not in before:
            return f"{before} is empty (an unset shell variable?); give it a value"
        words = []
        for word in argv[: min(i, 2)]:  # the command's words: `run`, `features index`
            if not (word.isalpha() and word.islower()):
                break
            words.append(word)
        command = " ".join(["steer", *words])
        return f"{command}: argument {i + 1 - len(words)} is empty (an unset shell variable?)"
    for arg in argv:
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:
            return f"{arg[:-1]} is empty (an unset shell variable?); give it a value"
    return None


def describe_failure(exc: Exception) -> tuple[str, str, int]:
    """``(label, one line, exit code)`` for an error that ended a command.

    A :class:`SteerError` is the user's input; so is a filesystem fault (a full disk, a
    read-only folder, an output path whose parent is a file: ``OSError``), named by its path.
    Anything else is steer's own bug: exit 1 and a hint to rerun with ``--debug``.
    """
    if isinstance(exc, SteerError):
        return "error:", str(exc), exc.exit_code
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, FileExistsError) and Path(str(exc.filename)).is_file():
            reason = "is a file, where a folder is needed"  # an output path's parent
        return "error:", f"{where}{reason}", SteerError.exit_code
    hint = "(run with --debug for the traceback)"
    return "internal error:", f"{type(exc).__name__}: {exc} {hint}", 1
