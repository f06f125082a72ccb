"""Every hook a steer plugin can implement.

A plugin is a plain module (or object) with functions decorated by :data:`hookimpl`, named
after the specs below. steer finds plugins through the ``steer`` entry-point group; the
built-in ones in ``plugins/`` are registered the same way. A third-party plugin is a module
plus one line in its ``pyproject.toml``::

    [project.entry-points.steer]
    myplugin = "my_module"

Conventions (as in pytest and llm):

* steer calls every hook with keyword arguments only, so an implementation may accept just
  the arguments it needs, in any order. Specs only ever grow by new arguments.
* Registry hooks receive a ``register`` callback. ``register`` checks what it is given and
  refuses duplicates loudly, naming the plugin, so two plugins cannot silently shadow each
  other.
* Hooks are not ``firstresult`` unless said so: every implementation is called and their
  return values (if any) are collected in a list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

PROJECT = "steer"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------
# Registration: what a plugin provides. Each hook is called once per plugin manager, when the
# registry it fills is first built (see steer.plugins.registry), so before any recipe is
# checked against it.
# -------------------------------------------------------------------------------------------


@hookspec
def steer_register_interventions(register: Callable[..., None]) -> None:
    """Register intervention types: functions that edit SAE feature activations.

    Called once, when a plugin manager's intervention registry is first built (so before any
    recipe is checked against it). Call ``register(intervention)`` with a
    :class:`steer.InterventionType` for each intervention this plugin provides.
    Its ``name`` is what recipes write as ``plugin:``. Registering a name that another plugin
    already registered raises :class:`steer.errors.SteerError` naming both plugins.

    The intervention's ``apply(acts, value)`` receives the current activations of the features
    a recipe step selects, shape ``[n_positions, n_features]``, and returns the new ones, same
    shape. The engine writes back only the difference, through the SAE decoder, so the SAE's
    reconstruction error stays in the residual stream.
    """


@hookspec
def steer_register_sae_architectures(register: Callable[..., None]) -> None:
    """Register SAE architectures: subclasses of :class:`steer.SAE`.

    Called once, when a plugin manager's architecture registry is first built. Call
    ``register(cls)`` for each class; ``cls.architecture`` is the name stored in (and read
    from) the ``architecture`` key of an SAELens ``cfg.json``. The built-in ``standard``,
    ``topk`` and ``jumprelu`` architectures are registered before any plugin.
    """


@hookspec
def steer_register_monitors(register: Callable[..., None]) -> None:
    """Register monitor types: read-only observers of feature activations during generation.

    Called once, when a plugin manager's monitor registry is first built. Call
    ``register(monitor)`` with a :class:`steer.MonitorType`. Monitors see the
    activations of the features they watch on every step (prompt pass and each new token) and
    return events; they never change the model's computation.
    """


@hookspec
def steer_register_attribution_methods(register: Callable[..., None]) -> None:
    """Register attribution methods for ``steer pinpoint``: ways to score how much each node
    (SAE feature, SAE error, residual neuron) drives a metric.

    Called once, when a plugin manager's attribution-method registry is first built. Call
    ``register(method)`` with a :class:`steer.AttributionMethod` for each
    method this plugin provides; its ``name`` is what pinpoint recipes write as ``method:``.
    Registering a name twice raises :class:`steer.errors.SteerError` naming both plugins.

    The method's ``score(ctx)`` receives a :class:`steer.AttributionContext`
    (``ctx.gradients(alpha)`` runs one forward and backward with the nodes moved ``alpha`` of
    the way to their ablation targets; ``ctx.score(grads)`` turns gradients into per-node
    scores) and returns ``(node_scores, error_score)``: a ``[n_nodes]`` tensor of estimated
    metric changes and a float for the SAE error node (``None`` where there is none). The
    built-in ``attribution_patching`` and ``integrated_gradients`` come from
    ``plugins/pinpoint.py``.
    """


@hookspec
def steer_register_judges(register: Callable[..., None]) -> None:
    """Register judges for ``steer eval``: ways to score how much a completion is about a
    concept.

    Called once, when a plugin manager's judge registry is first built. Call
    ``register(judge)`` with a :class:`steer.JudgeType`; its ``name`` is what ``--judge``
    names. ``judge.make(ctx, arg)`` is called once per run (``ctx`` a
    :class:`steer.JudgeContext`: the concept, its texts, the unsteered model's residuals;
    ``arg`` the text after ``--judge NAME:``) and returns ``score(prompts, completions)``,
    one float per completion. The built-in ``lexicon``, ``probe`` and ``llm`` judges come from
    ``plugins/judges.py`` and ``plugins/llm_judge.py``.
    """


# -------------------------------------------------------------------------------------------
# Command line: called once per ``steer`` invocation, before the command line is parsed.
# -------------------------------------------------------------------------------------------


@hookspec
def steer_register_commands(cli: Any) -> None:
    """Add commands to the ``steer`` command line (as llm's ``register_commands``).

    ``cli`` is the root :class:`typer.Typer` app: ``cli.command()(my_function)`` adds
    ``steer my-function``, ``cli.add_typer(group, name="mine")`` a group. Import heavy
    libraries inside the command, not at module level: every ``steer`` invocation loads every
    plugin. A plugin that raises here is reported by ``steer plugins`` and skipped. Return
    value ignored.
    """


# -------------------------------------------------------------------------------------------
# Steering runs: called around each :meth:`steer.Steerer.run`.
# -------------------------------------------------------------------------------------------


@hookspec
def steer_run_started(recipe: Any) -> None:
    """Called after a recipe has been validated and the model and SAEs are loaded, just before
    generation starts. ``recipe`` is the frozen :class:`steer.Recipe`. Return value
    ignored."""


@hookspec
def steer_run_finished(recipe: Any, results: Any) -> None:
    """Called once after a run, with the :class:`steer.RunResults`. Use it to write
    reports or logs. Return value ignored; an exception here is reported, and the run's
    results are still returned."""
