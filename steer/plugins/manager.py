"""The plugin manager factory: built-ins and third-party plugins, loaded the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from steer.plugins import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "steer"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    target: str
    error: str


class SteerPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which plugins failed to load."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        # Registries built from the hooks, by hook name, cached per manager; see
        # steer.plugins.registry.
        self.registries: dict[str, object] = {}

    def report_failure(self, name: str, target: str, message: str) -> None:
        """Record that plugin ``name`` failed at ``target`` (a hook) and was skipped there."""
        self.failures.append(PluginFailure(name=name, target=target, error=message))
        log.warning("steer plugin %r was skipped in %s: %s", name, target, message)

    def register_commands(self, cli: Any) -> None:
        """Let every plugin add commands to the typer app ``cli``. A plugin that raises is
        recorded in ``failures`` and skipped: one broken plugin never breaks the CLI."""
        for impl in self.hook.steer_register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:  # any error inside a plugin must not escape
                _record_failure(self, impl.plugin_name, "steer_register_commands", exc)


def get_plugin_manager(*, load_entry_points: bool = True) -> SteerPluginManager:
    """Make a fresh plugin manager with every plugin of the ``steer`` entry-point group.

    A plugin that fails to import (or has a misspelled hook) is recorded in ``pm.failures``,
    logged as a warning with its name and skipped: one broken plugin never breaks the CLI.
    Tests pass ``load_entry_points=False`` and register what they need by hand.
    """
    pm = SteerPluginManager()
    if load_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # any error inside a plugin must not escape
                _record_failure(pm, ep.name, ep.value, exc)
                continue
            try:
                _check_plugin(pm, plugin)
            except pluggy.PluginValidationError as exc:
                pm.unregister(plugin)
                _record_failure(pm, ep.name, ep.value, exc)
    return pm


def _check_plugin(pm: pluggy.PluginManager, plugin: object) -> None:
    """Refuse hook implementations that match no spec (a misspelled hook name)."""
    for hook in pm.get_hookcallers(plugin) or []:
        if not hook.has_spec():
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {hook.name!r} (no such hook in steer.plugins.hookspecs)"
            )
    pm.check_pending()


def _record_failure(pm: SteerPluginManager, name: str, target: str, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    pm.failures.append(PluginFailure(name=name, target=target, error=message))
    log.warning("steer plugin %r (%s) failed to load and was skipped: %s", name, target, message)
