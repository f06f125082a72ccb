"""The plugin system: the hooks a plugin can implement, the manager that loads plugins from the
``steer`` entry-point group, and the one registry class behind every ``steer_register_*`` hook.

* :mod:`steer.plugins.hookspecs`: every hook, documented, grouped by phase.
* :mod:`steer.plugins.manager`: :func:`get_plugin_manager`.
* :mod:`steer.plugins.registry`: :class:`Registry`, :class:`RegistryKind`, :func:`registry`.

The built-in plugins themselves live outside this package, in the top-level ``plugins/``
folder (installed as ``steer_plugins``), and load exactly as third-party ones do.
"""

from __future__ import annotations

from steer.plugins.hookspecs import hookimpl
from steer.plugins.manager import PluginFailure, SteerPluginManager, get_plugin_manager
from steer.plugins.registry import Registered, Registry, RegistryKind, registry

__all__ = [
    "PluginFailure",
    "Registered",
    "Registry",
    "RegistryKind",
    "SteerPluginManager",
    "get_plugin_manager",
    "hookimpl",
    "registry",
]
