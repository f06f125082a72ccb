"""The ``steer`` command line. Bad input prints one line and exits with code 2 (``--debug``
shows the traceback instead)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from steer.cli_common import DEBUG_FLAG, about, debug_option, err_console
from steer.errors import SteerError

app = typer.Typer(
    help="Steer language models through sparse-autoencoder features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sae_app = typer.Typer(help="Sparse autoencoders: list the available ones.", no_args_is_help=True)
app.add_typer(sae_app, name="sae")
# Commands that live in their own modules.
from steer.cli_features import features_app  # noqa: E402
from steer.cli_monitor import monitor_app  # noqa: E402
from steer.cli_pinpoint import pinpoint as _pinpoint  # noqa: E402
from steer.cli_probe import probe_app  # noqa: E402

app.add_typer(features_app, name="features")
app.add_typer(monitor_app, name="monitor")
app.add_typer(probe_app, name="probe")
app.command("pinpoint")(_pinpoint)


@app.command()
def run(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML recipe file."),
    prompt: list[str] = typer.Option(
        None, "--prompt", "-p", help="Run on this prompt instead of the recipe's (repeatable)."
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", "-n", min=1),
    device: str | None = typer.Option(None, help="torch device; default: cuda if there is one."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run unsteered."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    events: Path | None = typer.Option(
        None, "--events", help="Append monitor events to this JSONL file as they happen."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write an HTML report of the monitored run (tokens shaded)."
    ),
    debug: bool = debug_option(),
) -> None:
    """Generate with a recipe's interventions and monitors; show baseline and steered
    completions, monitor events live, and what the monitors' actions did."""
    import contextlib

    from steer.engine import Steerer
    from steer.fileio import check_writable
    from steer.monitoring.eventlog import EventLog
    from steer.recipe import PromptSpec, load_recipe

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
    if report is not None:
        check_writable(report, what="report")
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

        write_report(results, steerer.recipe, report)
    if as_json:
        typer.echo(json.dumps(results.to_dict(), indent=2))
    else:
        _print_results(results, recipe)
    for path, what in ((events, "events"), (report, "report")):
        if path is not None:
            err_console.print(f"{what}: {path}", highlight=False)


def _run_with_progress(steerer, *, baseline: bool, quiet: bool, log=None):
    """Run with a progress bar and a live view of the monitors: event counts per group on the
    bar, and a line as soon as a monitor acts (warn, stop, or a conditional intervention)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    recipe = steerer.recipe
    n_batches = -(-len(recipe.prompts) // recipe.generation.batch_size)
    total = n_batches * (recipe.generation.max_new_tokens + 1)
    counts = dict.fromkeys(recipe.group_names(), 0)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[monitors]}"),
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
        progress.update(task, monitors=summary())

    # The live view shows `warn` actions itself; the library's logging warning would repeat it.
    logging.getLogger("steer.monitoring.live").setLevel(logging.ERROR)
    with progress:
        task = progress.add_task("generating", total=total, monitors=summary())
        return steerer.run(
            baseline=baseline,
            on_step=lambda _step: progress.advance(task),
            on_event=on_event if recipe.monitors else None,
        )


def action_line(event: dict) -> str:
    """One line for a monitor's action, e.g. ``prompt 2: stop (toxicity) at generated token 5
    ' word', feature 1935 = 9.12``."""
    verb = {"warn": "warning", "stop": "stop"}.get(event["action"], f"{event['action']} from here")
    return (
        f"prompt {event['prompt']}: [bold]{verb}[/bold] ({event['group']}) at {event['phase']} "
        f"token {event['token_index']} {event['token']!r}, feature {event['feature']} = "
        f"{event['activation']:.2f}"
    )


def _print_results(results, recipe) -> None:
    console = Console()
    for i, r in enumerate(results.results):
        table = Table(title=f"prompt {i}: {r.prompt}", show_lines=True, expand=True)
        if r.baseline is not None:
            table.add_column("baseline", ratio=1)
        table.add_column("steered", ratio=1)
        table.add_row(*([r.baseline] if r.baseline is not None else []), r.steered)
        console.print(table)
        _print_events(console, r.events)
        for action in r.actions:
            console.print("  " + action_line({"prompt": i, **action}), highlight=False)
    t = results.timing
    console.print(
        f"[dim]model {t['load_model_s']:.1f}s, SAEs {t['load_saes_s']:.2f}s, "
        f"baseline {t['baseline_s']:.1f}s, steered {t['steered_s']:.1f}s "
        f"({t.get('steered_tok_per_s', 0):.1f} tok/s)[/dim]"
    )


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
        console.print(
            f"  [bold]{name}[/bold]: {len(found)} events: {tokens}{more}", highlight=False
        )


@app.command()
def check(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML recipe file."),
    debug: bool = debug_option(),
) -> None:
    """Validate a recipe (schema, plugins, feature indices) without loading the model."""
    from steer.check import check_recipe
    from steer.plugins import get_plugin_manager
    from steer.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    with about(recipe_path):
        check_recipe(recipe, get_plugin_manager())
    n_steps = len(recipe.steps())
    typer.echo(
        f"ok: {recipe_path} ({len(recipe.prompts)} prompts, {len(recipe.saes)} SAEs, "
        f"{n_steps} interventions and monitors)"
    )


@app.command()
def plugins(debug: bool = debug_option()) -> None:
    """List the installed plugins and what each provides."""
    from steer.interventions import get_interventions
    from steer.monitors import get_monitors
    from steer.pinpoint.methods import get_attribution_methods
    from steer.plugins import get_plugin_manager
    from steer.sae import get_architectures

    pm = get_plugin_manager()
    provided: dict[str, list[str]] = {}
    for kind, registry in (
        ("intervention", get_interventions(pm)),
        ("monitor", get_monitors(pm)),
        ("attribution method", get_attribution_methods(pm)),
    ):
        for name, entry in registry.items():
            desc = getattr(entry.obj, "description", "")
            provided.setdefault(entry.plugin, []).append(f"{kind} {name}: {desc}")
    get_architectures(pm)  # fills the registry cache, which knows who registered what
    for name, entry in pm.registries["steer_register_sae_architectures"].items():
        provided.setdefault(entry.plugin, []).append(f"SAE architecture {name}")
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
    Console().print(table)
    for failure in pm.failures:
        err_console.print(
            f"[red]failed to load[/red] {failure.name} ({failure.target}): {failure.error}"
        )


@sae_app.command("list")
def sae_list(debug: bool = debug_option()) -> None:
    """Show the SAEs shipped with steer, with their paths."""
    from steer.sae import read_sae_config
    from steer.sae.sources import builtin_saes

    shipped = builtin_saes()
    if not shipped:
        typer.echo("no SAEs are shipped yet; give a recipe `path:` to an SAE folder")
        return
    for name, path in shipped.items():
        cfg = read_sae_config(path)
        typer.echo(
            f"{name}\t{cfg.architecture} d_in={cfg.d_in} d_sae={cfg.d_sae} layer={cfg.layer}\t{path}"
        )


@sae_app.command("eval")
def sae_eval(
    sae: str = typer.Argument(..., help="Builtin SAE name or SAE folder."),
    data: list[Path] = typer.Option(..., "--data", help="Text files (txt, JSONL, chat JSON)."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model the SAE belongs to."),
    max_tokens: int = typer.Option(50_000, min=128, help="Tokens for reconstruction metrics."),
    ce_tokens: int = typer.Option(16_384, min=128, help="Tokens for the loss metrics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Reconstruction and downstream-loss metrics of an SAE on held-out text."""
    from steer.activations import read_documents
    from steer.features.loading import load_sae_and_model
    from steer.train_eval import evaluate_sae

    folder, loaded, lm = load_sae_and_model(sae, model=model)
    texts = [doc for path in data for doc in read_documents(path, lm.tokenizer)]
    metrics = evaluate_sae(
        lm,
        loaded,
        loaded.cfg.layer,
        texts,
        max_tokens=max_tokens,
        ce_tokens=ce_tokens,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"{folder.name} on {', '.join(p.name for p in data)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command()
def train(
    recipe: Path | None = typer.Argument(
        None, metavar="[RECIPE]", help="Training recipe (YAML); flags given override its keys."
    ),
    data: list[Path] = typer.Option(
        None, "--data", help="Text files or folders to train on (replaces the recipe's data)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder for the trained SAE (SAELens)."),
    model: str | None = typer.Option(None, help="Model (default: smollm2-135m-instruct)."),
    layer: int | None = typer.Option(None, help="Residual stream after this block (default: 12)."),
    architecture: str | None = typer.Option(None, help="topk or standard (default: topk)."),
    d_sae: int | None = typer.Option(None, help="Number of features (default: 4608)."),
    k: int | None = typer.Option(None, help="topk: active features per token (default: 32)."),
    l1_coefficient: float | None = typer.Option(None, help="standard: L1 weight (default: 5)."),
    collect_tokens: int | None = typer.Option(
        None, help="Unique tokens to collect (default: 1000000)."
    ),
    train_tokens: int | None = typer.Option(
        None, help="Activations the optimizer sees (default: 2000000)."
    ),
    batch_size: int | None = typer.Option(None, help="Activations per step (default: 2048)."),
    lr: float | None = typer.Option(None, help="Adam learning rate (default: 0.002)."),
    seed: int | None = typer.Option(None, help="Seed for data mix and init (default: 0)."),
    checkpoint_every: int | None = typer.Option(
        None, help="Steps between checkpoints (default: 200)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    debug: bool = debug_option(),
) -> None:
    """Train an SAE (topk or standard) from a YAML recipe or flags (checkpoints; --resume)."""
    import contextlib
    import os

    from steer.train import train_sae
    from steer.train_recipe import load_train_recipe, parse_train_recipe, to_config

    flags = {
        "model": model,
        "layer": layer,
        "architecture": architecture,
        "d_sae": d_sae,
        "k": k,
        "l1_coefficient": l1_coefficient,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        # Paths on the command line are relative to the working directory, not the recipe.
        "data": [{"path": os.path.abspath(p)} for p in data] if data else None,
        "out": os.path.abspath(out) if out is not None else None,
        "tokens": {
            name: v
            for name, v in (("collect", collect_tokens), ("train", train_tokens))
            if v is not None
        }
        or None,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    if recipe is not None:
        config = load_train_recipe(recipe, overrides, resume=resume)
        where = about(recipe)
    else:
        if not data or out is None:
            raise SteerError("give a training RECIPE, or --data and --out")
        parsed = parse_train_recipe(overrides, source="command line")
        config = to_config(parsed, source="command line", resume=resume)
        where = contextlib.nullcontext()
    with where:
        path = train_sae(config)
    typer.echo(f"saved {path}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
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


if __name__ == "__main__":
    main()
