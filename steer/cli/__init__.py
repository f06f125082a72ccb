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
from typing import Any

import typer
from typer.exceptions import TyperException

from steer.cli.common import DEBUG_FLAG, err_console
from steer.errors import SteerError

log = logging.getLogger(__name__)

# The modules of steer's own commands, in the order `steer --help` lists them.
COMMAND_MODULES = ("run", "train", "sae", "features", "monitor", "probe", "pinpoint", "plugins")


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
    try:
        app = build_app(_plugin_manager())
        rc = app(args=argv, prog_name="steer", standalone_mode=False)
    except SteerError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors (typer's click): its own message, exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
