"""One registry class for everything plugins register: interventions, monitors, SAE
architectures, attribution methods (and whatever comes next).

A :class:`RegistryKind` says what one registry holds: the ``steer_register_*`` hook that fills
it, the type of what is registered and how each thing is named. :func:`registry` builds it from
a plugin manager (once; it is cached on the manager): every hook implementation gets its own
``register`` callback, so the registry knows which plugin registered what, checks each object,
and names both plugins when a name is taken twice.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from steer.errors import SteerError

T = TypeVar("T")

# Who registered the built-ins a kind brings along (SAE architectures): the host itself.
HOST = "steer"


@dataclass(frozen=True)
class Registered(Generic[T]):
    """One registered object and the plugin that registered it."""

    name: str
    obj: T
    plugin: str


@dataclass(frozen=True)
class RegistryKind(Generic[T]):
    """What one registry holds.

    Attributes:
        hook: the hook that fills it (``steer_register_interventions``).
        kind: what one entry is called in messages (``intervention``).
        expected: the registered objects' type, or for ``classes`` their base class.
        name_attr: the attribute that names an object (``name``; ``architecture``).
        callables: attributes that must be callable (``apply``).
        classes: entries are subclasses of ``expected``, not instances.
        lookup: how a name is looked for in messages (``intervention plugin``).
        builtins: objects registered by the host before any plugin.
    """

    hook: str
    kind: str
    expected: type
    name_attr: str = "name"
    callables: tuple[str, ...] = ()
    classes: bool = False
    lookup: str = ""
    builtins: Callable[[], Iterable[Any]] = field(default=tuple)

    def name_of(self, obj: Any) -> str:
        return getattr(obj, self.name_attr)

    def guard(self, obj: Any, plugin: str) -> Any:
        """``obj`` with each of its ``callables`` raising :class:`PluginError` instead of
        whatever the plugin's code raises (classes are returned as they are)."""
        if self.classes or not dataclasses.is_dataclass(obj) or not self.callables:
            return obj
        what = f"{self.kind} {self.name_of(obj)!r}"
        return dataclasses.replace(
            obj,
            **{a: guarded(plugin, f"{what} ({a})", getattr(obj, a)) for a in self.callables},
        )

    def validate(self, obj: Any) -> None:
        """Raise ``TypeError``/``ValueError`` for an object this registry cannot hold."""
        wanted = f"steer.{self.expected.__name__}"
        if self.classes:
            if not (isinstance(obj, type) and issubclass(obj, self.expected)):
                raise TypeError(f"{obj!r} is not a subclass of {wanted}")
        elif not isinstance(obj, self.expected):
            raise TypeError(f"expected {wanted}, got {type(obj).__name__}")
        name = getattr(obj, self.name_attr, None)
        if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
            raise ValueError(
                f"{self.kind} {self.name_attr} {name!r} must be a non-empty identifier"
            )
        for attr in self.callables:
            if not callable(getattr(obj, attr, None)):
                raise TypeError(f"{self.kind} {name!r}: {attr} is not callable")


class PluginError(SteerError):
    """Plugin code raised: one line naming the plugin and what it was asked to do."""

    def __init__(self, plugin: str, what: str, exc: BaseException):
        first = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        super().__init__(f"plugin {plugin!r} failed in {what}: {reason}")


def call_plugin(
    plugin: str, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)``, where ``fn`` is plugin code: whatever it raises becomes a
    :class:`PluginError` naming ``plugin`` and ``what`` (a :class:`SteerError` it raises on
    purpose passes through as it is)."""
    try:
        return fn(*args, **kwargs)
    except SteerError:
        raise
    except Exception as exc:
        raise PluginError(plugin, what, exc) from exc


def guarded(plugin: str, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped with :func:`call_plugin`, for calls made long after registration (an
    intervention's ``apply`` on every token)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return call_plugin(plugin, what, fn, *args, **kwargs)

    return call


def _raise(plugin: str, message: str) -> None:
    raise SteerError(message)


class Registry(Generic[T]):
    """Name -> registered object, for one :class:`RegistryKind`."""

    def __init__(
        self,
        kind: RegistryKind[T],
        *,
        failures: Iterable[str] = (),
        refuse: Callable[[str, str], None] | None = None,
    ):
        self.kind = kind
        self.entries: dict[str, Registered[T]] = {}
        self.failures = list(failures)  # plugins that failed to load: why a name may be missing
        # What happens to a registration that cannot be taken (a wrong type, a name taken):
        # ``refuse(plugin, message)``. The default raises; a plugin manager records it and the
        # registry goes on without it, so one broken plugin never breaks every command.
        self.refuse = refuse or _raise

    def registrar(self, plugin: str) -> Callable[[T], None]:
        """The ``register`` callback handed to ``plugin``'s hook implementation."""

        def register(obj: T) -> None:
            try:
                self.kind.validate(obj)
            except (TypeError, ValueError) as exc:
                self.refuse(plugin, f"plugin {plugin!r} registered a bad {self.kind.kind}: {exc}")
                return
            name = self.kind.name_of(obj)
            if name in self.entries:
                first = self.entries[name].plugin
                self.refuse(
                    plugin,
                    f"{self.kind.kind} {name!r} is registered twice: by plugin {first!r} and by "
                    f"{plugin!r} (the first is kept)",
                )
                return
            obj = self.kind.guard(obj, plugin)
            self.entries[name] = Registered(name=name, obj=obj, plugin=plugin)

        return register

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> Registered[T]:
        return self.entries[name]

    def objects(self) -> dict[str, T]:
        """Name -> object, in registration order."""
        return {name: entry.obj for name, entry in self.entries.items()}

    def get(self, name: str, *, where: str) -> T:
        """The object registered as ``name``, or a one-line :class:`SteerError` at ``where``
        that lists the known names (and any plugins that failed to load, which may be why
        ``name`` is missing)."""
        if name in self.entries:
            return self.entries[name].obj
        known = ", ".join(sorted(self.entries)) or "none"
        hint = (
            f"; plugins that failed to load: {', '.join(self.failures)} (see `steer plugins`)"
            if self.failures
            else ""
        )
        what = self.kind.lookup or self.kind.kind
        raise SteerError(f"unknown {what} {name!r} (known: {known}){hint}", where=where)


def registry(pm: Any, kind: RegistryKind[T]) -> Registry[T]:
    """The registry of ``kind`` that the plugins of ``pm`` fill (built on first use and cached
    on ``pm``). With ``pm=None``, only the kind's built-ins."""
    cache = getattr(pm, "registries", None)
    if cache is not None and kind.hook in cache:
        return cache[kind.hook]
    report = getattr(pm, "report_failure", None)

    def refuse(plugin: str, message: str) -> None:
        if report is None or plugin == HOST:  # no manager to tell, or steer's own mistake
            raise SteerError(message)
        report(plugin, kind.hook, message)
        built.failures.append(plugin)

    failures = [f.name for f in getattr(pm, "failures", [])]
    built: Registry[T] = Registry(kind, failures=failures, refuse=refuse)
    register_builtin = built.registrar(HOST)
    for obj in kind.builtins():
        register_builtin(obj)
    if pm is not None:
        # Call implementations one by one, in registration order, so that each gets a register
        # callback that knows its plugin's name (and the first to take a name keeps it).
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            register = built.registrar(impl.plugin_name)
            try:
                call_plugin(impl.plugin_name, kind.hook, impl.function, register=register)
            except SteerError as exc:
                refuse(impl.plugin_name, str(exc))
    if cache is not None:
        cache[kind.hook] = built
    return built
