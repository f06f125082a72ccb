"""Name -> object registries filled by ``steer_register_*`` hooks.

Each hook implementation gets its own ``register`` callback, so the registry knows which plugin
registered what and can name both plugins when a name is taken twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from steer.errors import SteerError

T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    """One registered object and the plugin that registered it."""

    name: str
    obj: T
    plugin: str


def build_registry(
    pm: Any,
    hook_name: str,
    *,
    kind: str,
    name_of: Callable[[T], str],
    validate: Callable[[T], None],
    builtins: Iterable[T] = (),
) -> dict[str, Registered[T]]:
    """Call ``hook_name`` on every plugin of ``pm`` and collect what each one registers.

    ``builtins`` are registered first under the plugin name ``steer``. ``validate`` raises
    ``TypeError``/``ValueError`` for an object of the wrong kind; the error is re-raised as a
    :class:`SteerError` naming the plugin. The result is cached on the plugin manager.
    """
    cache = getattr(pm, "registries", None)
    if cache is not None and hook_name in cache:
        return cache[hook_name]

    registry: dict[str, Registered[T]] = {}

    def registrar(plugin: str) -> Callable[[T], None]:
        def register(obj: T) -> None:
            try:
                validate(obj)
            except (TypeError, ValueError) as exc:
                raise SteerError(f"plugin {plugin!r} registered a bad {kind}: {exc}") from exc
            name = name_of(obj)
            if name in registry:
                first = registry[name].plugin
                raise SteerError(
                    f"{kind} {name!r} is registered twice: by plugin {first!r} and by {plugin!r}"
                )
            registry[name] = Registered(name=name, obj=obj, plugin=plugin)

        return register

    builtin_register = registrar("steer")
    for obj in builtins:
        builtin_register(obj)
    if pm is not None:
        hook = getattr(pm.hook, hook_name)
        # Call implementations one by one, in registration order, so that each gets a register
        # callback that knows its plugin's name (and the first to take a name keeps it).
        for impl in hook.get_hookimpls():
            impl.function(register=registrar(impl.plugin_name))
    if cache is not None:
        cache[hook_name] = registry
    return registry


def lookup(pm: Any, registry: dict[str, Registered[T]], name: str, *, what: str, where: str) -> T:
    """The object registered as ``name``, or a one-line :class:`SteerError` that lists the
    known names (and any plugins that failed to load, which may be why ``name`` is missing).
    ``what`` names the kind in the message, e.g. ``"intervention plugin"``."""
    if name in registry:
        return registry[name].obj
    known = ", ".join(sorted(registry)) or "none"
    failures = getattr(pm, "failures", [])
    hint = (
        f"; plugins that failed to load: {', '.join(f.name for f in failures)} (see `steer plugins`)"
        if failures
        else ""
    )
    raise SteerError(f"unknown {what} {name!r} (known: {known}){hint}", where=where)
