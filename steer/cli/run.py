"""``steer run``: apply a steering recipe, showing baseline and steered completions and the
monitors' events live."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from steer.cli.common import (
    about,
    dashboard_option,
    debug_option,
    device_option,
    err_console,
    out_console,
)
from steer.errors import SteerError


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``steer`` app."""
    app.command("run")(run)


def run(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML recipe file."),
    prompt: list[str] = typer.Option(
        None, "--prompt", "-p", help="Run on this prompt instead of the recipe's (repeatable)."
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", "-n", min=1),
    device: str | None = device_option(),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run unsteered."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    events: Path | None = typer.Option(
        None, "--events", help="Append monitor events to this JSONL file as they happen."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write an HTML report of the monitored run (tokens shaded)."
    ),
    dashboard: list[str] = dashboard_option("the report"),
    debug: bool = debug_option(),
) -> None:
    """Generate with a recipe's interventions and monitors; show baseline and steered
    completions, monitor events live, and what the monitors' actions did."""
    import contextlib

    from steer.io import check_writable
    from steer.monitoring.eventlog import EventLog
    from steer.steering.engine import Steerer
    from steer.steering.recipe import PromptSpec, load_recipe

    recipe = load_recipe(recipe_path)
    if prompt:
        recipe = recipe.model_copy(update={"prompts": [PromptSpec(text=p) for p in prompt]})
    if max_new_tokens is not None:
        gen = recipe.generation.model_copy(update={"max_new_tokens": max_new_tokens})
        recipe = recipe.model_copy(update={"generation": gen})
    if (events or report) and not recipe.monitors:
        flag = "--events" if events else "--report"
        raise SteerError(f"{flag} needs monitors, and the recipe has none", where=str(recipe_path))
    # Output paths fail here, before minutes of loading and generating.
    links = None
    if report is not None:
        check_writable(report, what="report")
        if dashboard:
            from steer.sae.sources import dashboard_links

            links = dashboard_links(recipe.saes, dashboard, report.parent)
    elif dashboard:
        raise SteerError("--dashboard needs --report (it links the report's features)")
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(EventLog(events)) if events is not None else None
        with err_console.status("loading the model and SAEs"), about(recipe_path):
            steerer = Steerer(recipe, device=device)
        if log is not None:
            log.started(steerer.recipe, source=str(recipe_path))
        results = _run_with_progress(steerer, baseline=baseline, quiet=as_json, log=log)
        if log is not None:
            log.finished(results)
    if report is not None:
        from steer.monitoring.report import write_report

        write_report(results, steerer.recipe, report, links=links)
    if as_json:
        typer.echo(json.dumps(results.to_dict(), indent=2))
    else:
        _print_results(results, recipe)
    for path, what in ((events, "events"), (report, "report")):
        if path is not None:
            err_console.print(f"{what}: {path}", highlight=False)


def _run_with_progress(steerer, *, baseline: bool, quiet: bool, log=None):
    """Run with a progress bar per phase (baseline, steered: steps done, ETA) and a live view
    of the monitors: event counts per group on the steered bar, and a line as soon as a monitor
    acts (warn, stop, or a conditional intervention)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    recipe = steerer.recipe
    per_batch = recipe.generation.max_new_tokens
    n_batches = -(-len(recipe.prompts) // recipe.generation.batch_size)
    counts = dict.fromkeys(recipe.group_names(), 0)
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[monitors]}", markup=False),  # group names are the user's
        console=err_console,
        transient=True,
        disable=quiet,
    )

    def summary() -> str:
        return "  ".join(f"{name} {n}" for name, n in counts.items())

    def on_event(event: dict) -> None:
        if log is not None:
            log.event(event)
        counts[event["group"]] += 1
        if event["first"] and event["action"] != "log":
            err_console.print(action_line(event), highlight=False)
        progress.update(steered, monitors=summary())

    # The live view shows `warn` actions itself; the library's logging warning would repeat it.
    logging.getLogger("steer.steering.live").setLevel(logging.ERROR)
    with progress:
        base = None
        if baseline:
            base = progress.add_task("baseline", total=n_batches * per_batch, monitors="")
        steered = progress.add_task("steered", total=n_batches * per_batch, monitors=summary())
        return steerer.run(
            baseline=baseline,
            on_baseline_step=BatchSteps(progress, base, per_batch) if base is not None else None,
            on_step=BatchSteps(progress, steered, per_batch),
            on_event=on_event if recipe.monitors else None,
        )


class BatchSteps:
    """A phase's step callback: moves its progress task to ``batches done * per_batch + step``
    (a batch whose prompts all end early skips the rest of its steps, so the ETA stays true)."""

    def __init__(self, progress, task, per_batch: int):
        self.progress, self.task, self.per_batch = progress, task, per_batch
        self.batch = -1

    def __call__(self, step: int) -> None:
        if step == 0:
            self.batch += 1
        done = self.batch * self.per_batch + min(step + 1, self.per_batch)
        self.progress.update(self.task, completed=done)


def action_line(event: dict) -> Text:
    """One line for a monitor's action, e.g. ``prompt 2: stop (toxicity) at generated token 5
    ' word', feature 1935 = 9.12`` (the verb in bold)."""
    verb = {"warn": "warning", "stop": "stop"}.get(event["action"], f"{event['action']} from here")
    return Text.assemble(
        f"prompt {event['prompt']}: ",
        (verb, "bold"),
        f" ({event['group']}) at {event['phase']} token {event['token_index']} "
        f"{event['token']!r}, feature {event['feature']} = {event['activation']:.2f}",
    )


def _print_results(results, recipe) -> None:
    console = out_console()
    for i, r in enumerate(results.results):
        table = Table(title=f"prompt {i}: {shorten(r.prompt)}", show_lines=True, expand=True)
        if r.baseline is not None:
            table.add_column("baseline", ratio=1)
        table.add_column("steered", ratio=1)
        table.add_row(*([r.baseline] if r.baseline is not None else []), r.steered)
        console.print(table)
        _print_events(console, r.events)
        for action in r.actions:
            console.print(Text("  ") + action_line({"prompt": i, **action}), highlight=False)
    t = results.timing
    console.print(
        f"model {t['load_model_s']:.1f}s, SAEs {t['load_saes_s']:.2f}s, "
        f"baseline {t['baseline_s']:.1f}s, steered {t['steered_s']:.1f}s "
        f"({t.get('steered_tok_per_s', 0):.1f} tok/s)",
        style="dim",
    )


def shorten(text: str, limit: int = 72) -> str:
    """``text`` on one line, cut to ``limit`` characters (a table title, not the prompt)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _print_events(console: Console, events: list[dict], shown: int = 8) -> None:
    """One line per monitor: how many events, and the first few tokens with activations."""
    by_monitor: dict[str, list[dict]] = {}
    for event in events:
        by_monitor.setdefault(event["group"], []).append(event)
    for name, found in by_monitor.items():
        tokens = ", ".join(
            f"{e['token']!r}@{e['phase'][0]}{e['token_index']}={e['activation']:.1f}"
            for e in found[:shown]
        )
        more = f", ... ({len(found) - shown} more)" if len(found) > shown else ""
        line = Text.assemble("  ", (name, "bold"), f": {len(found)} events: {tokens}{more}")
        console.print(line, highlight=False)
