"""``steer pinpoint RECIPE``: find the SAE features (and, as a baseline, the residual neurons)
that cause a behaviour, verify them by ablation and measure the edit's side effects."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from steer.cli.common import about, dashboard_option, debug_option, err_console, out_console


def register(app: typer.Typer) -> None:
    """Add ``pinpoint`` to the ``steer`` app."""
    app.command("pinpoint")(pinpoint)


def pinpoint(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="YAML pinpoint recipe."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for pinpoint.json, curve.html and curve.png."
    ),
    write_recipe: Path | None = typer.Option(
        None, "--write-recipe", help="Write a steering recipe that ablates the chosen features."
    ),
    recipe_features: int | None = typer.Option(
        None,
        "--recipe-features",
        min=1,
        help="Features per SAE in --write-recipe (default: as many as removed half of the metric).",
    ),
    dashboard: list[str] = dashboard_option("curve.html"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    rows: int = typer.Option(20, min=1, help="Rows of each ranked table."),
    debug: bool = debug_option(),
) -> None:
    """Pinpoint the features that drive a metric (attribution patching, verified by ablation)."""

    from steer.errors import SteerError
    from steer.io import atomic_write_text, check_writable, check_writable_dir
    from steer.pinpoint import Pinpointer, load_pinpoint_recipe
    from steer.pinpoint.report import (
        check_output_folder,
        print_report,
        steering_recipe,
        write_outputs,
    )
    from steer.sae.sources import dashboard_links

    recipe = load_pinpoint_recipe(recipe_path)
    # Output paths fail here, before minutes of loading and pinpointing.
    if out is not None:
        check_writable_dir(out, what="pinpoint output")
        check_output_folder(out)
    if write_recipe is not None:
        check_writable(write_recipe, what="steering recipe")
    if dashboard and out is None:
        raise SteerError("--dashboard needs --out (it links curve.html's features)")
    # A bad dashboard fails here, before the model loads.
    links = dashboard_links(recipe.saes, dashboard, out) if dashboard and out is not None else None
    with err_console.status("loading the model and SAEs"), about(recipe_path):
        # CPU only for now: prompts, bases and results are built as CPU tensors.
        pinpointer = Pinpointer(recipe, device="cpu")
    result = pinpointer.run(progress=not as_json).to_dict()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_report(result, out_console(), rows=rows)
    if out is not None:
        for path in write_outputs(result, out, links=links):
            err_console.print(f"wrote {path}", highlight=False)
        if not (out / "curve.png").exists():
            err_console.print("no PNG: matplotlib is not installed (curve.html has the plot)")
    if write_recipe is not None:
        atomic_write_text(write_recipe, steering_recipe(recipe, result, n=recipe_features))
        err_console.print(f"wrote {write_recipe} (run it with `steer run {write_recipe}`)")
