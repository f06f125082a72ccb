"""``steer monitor score``: score a file of texts with a recipe's monitors, without
generating. Texts are never printed (the safety sets are offensive on purpose): rows show the
text's index and its scores."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from steer.cli.common import (
    about,
    debug_option,
    device_option,
    err_console,
    out_console,
    texts_option,
)


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` group (``score``, ``eval``) to the ``steer`` app."""
    from steer.cli.monitor_eval import evaluate

    group = typer.Typer(
        help="Watch SAE features: score texts with a recipe's monitors; compare detectors "
        "across labelled sets.",
        no_args_is_help=True,
    )
    group.command("score")(score)
    group.command("eval")(evaluate)
    app.add_typer(group, name="monitor")


def score(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML recipe with monitors."),
    input_path: Path = texts_option(
        "--input",
        "Texts: one per line (.txt), or JSONL/JSON with a text field.",
        what="input file",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Also write one JSON line per text."),
    show: int = typer.Option(50, "--show", min=0, help="Table rows to print (highest first)."),
    ctx_len: int = typer.Option(128, "--ctx-len", min=2, help="Tokens read per text."),
    batch: int = typer.Option(8, "--batch", min=1, help="Texts per forward pass."),
    device: str | None = device_option(),
    debug: bool = debug_option(),
) -> None:
    """Per text, each monitor group's max activation (over its features and the text's kept
    positions) and whether it crosses the group's threshold."""
    from steer.corpus.texts import read_texts
    from steer.model import load_model
    from steer.monitoring.score import score_texts, watched_groups
    from steer.plugins.manager import get_plugin_manager
    from steer.steering.attach import attach_saes, load_saes
    from steer.steering.recipe import load_recipe
    from steer.steering.remote import refuse_remote

    recipe = load_recipe(recipe_path)
    pm = get_plugin_manager()
    with about(recipe_path):
        refuse_remote(recipe, "steer monitor score")
        groups = watched_groups(recipe, pm)
    if out is not None:  # before the model loads
        from steer.io import check_writable

        check_writable(out, what="scores")
    with err_console.status("loading the model and SAEs"), about(recipe_path):
        saes = load_saes(recipe, pm=pm)
        lm = load_model(recipe.model, device=device)
        attached = attach_saes(saes, lm, recipe)
    texts = read_texts(input_path, lm.tokenizer)
    rows = score_texts(
        lm,
        attached,
        groups,
        texts,
        ctx_len=ctx_len,
        batch=batch,
        progress=not as_json,
    )
    records = [
        {"index": r.index, "n_tokens": r.n_tokens, "n_kept": r.n_kept, "scores": r.scores,
         "fired": r.fired}
        for r in rows
    ]  # fmt: skip
    if out is not None:
        from steer.io import atomic_write_text

        atomic_write_text(out, "".join(json.dumps(rec) + "\n" for rec in records))
    summary = [
        {
            "name": g.name,
            "sae": g.sae,
            "features": list(g.features),
            "monitor": g.monitor.name,
            **g.settings,
            "n_fired": sum(r.fired[g.name] for r in rows),
        }
        for g in groups
    ]
    if as_json:
        payload = {"recipe": str(recipe_path), "input": str(input_path), "n_texts": len(rows)}
        typer.echo(json.dumps({**payload, "groups": summary, "texts": records}, indent=2))
        return
    _print_table(rows, groups, summary, input_path, show)
    if out is not None:
        typer.echo(f"wrote {len(records)} lines to {out}")


def _print_table(rows, groups, summary, input_path: Path, show: int) -> None:
    from rich.table import Table

    from steer.steering.monitors import describe_monitor

    names = [g["name"] for g in summary]
    # Highest first (by the largest group score), so triage sees what fired first.
    order = sorted(rows, key=lambda r: (-max(r.scores.values(), default=0.0), r.index))
    table = Table(title=f"{input_path.name}: {len(rows)} texts (texts not shown)")
    table.add_column("text #", justify="right")
    table.add_column("tokens", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for r in order[:show]:
        cells = [f"{r.scores[n]:.2f}{' *' if r.fired[n] else ''}" for n in names]
        table.add_row(str(r.index), str(r.n_tokens), *cells)
    console = out_console()
    if show:
        console.print(table)
    for g, counts in zip(groups, summary, strict=True):
        console.print(
            f"{g.name}: {counts['n_fired']}/{len(rows)} texts fired "
            f"({describe_monitor(g.monitor.name, g.settings)}; "
            f"{len(g.features)} features of SAE {g.sae})",
            highlight=False,
        )
