"""``steer plugins``: what each installed plugin provides, and which failed to load."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from steer.cli.common import debug_option, err_console, out_console


def register(app: typer.Typer) -> None:
    """Add ``plugins`` to the ``steer`` app."""
    app.command("plugins")(plugins)


def plugins(debug: bool = debug_option()) -> None:
    """List the installed plugins and what each provides."""
    from steer.evaluation.judges import JUDGES
    from steer.pinpoint.methods import ATTRIBUTION_METHODS
    from steer.plugins.manager import get_plugin_manager
    from steer.plugins.registry import registry
    from steer.sae.registry import SAE_ARCHITECTURES
    from steer.steering.interventions import INTERVENTIONS
    from steer.steering.monitors import MONITORS

    pm = get_plugin_manager()
    provided: dict[str, list[str]] = {}
    for kind in (INTERVENTIONS, MONITORS, ATTRIBUTION_METHODS, SAE_ARCHITECTURES, JUDGES):
        for name in (found := registry(pm, kind)):
            entry = found[name]
            desc = getattr(entry.obj, "description", "")
            line = (
                f"{kind.kind} {name}: {desc}"
                if isinstance(desc, str) and desc
                else f"{kind.kind} {name}"
            )
            provided.setdefault(entry.plugin, []).append(line)
    # Adding commands to a scratch app finds the plugins that fail there (main() skipped them).
    pm.register_commands(typer.Typer())
    failed = {f.name for f in pm.failures}
    for impl in pm.hook.steer_register_commands.get_hookimpls():
        if impl.plugin_name not in failed:
            provided.setdefault(impl.plugin_name, []).append("commands")
    table = Table(show_lines=False)
    table.add_column("plugin")
    table.add_column("module")
    table.add_column("provides")
    for name in sorted(provided):
        plugin = pm.get_plugin(name)
        module = (
            getattr(plugin, "__name__", "steer (host)") if plugin is not None else "steer (host)"
        )
        table.add_row(name, module, "\n".join(provided[name]))
    out_console().print(table)
    for failure in pm.failures:
        err_console.print(
            Text("failed to load", "red"),
            f"{failure.name} ({failure.target}): {failure.error}",
            soft_wrap=True,  # one line per plugin, whatever the terminal's width
        )
