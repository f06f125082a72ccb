"""``steer sae list`` and ``steer sae eval``: the shipped SAEs, and an SAE's metrics on held-out
text."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from steer.cli.common import debug_option, err_console, model_option, out_console, texts_option


def register(app: typer.Typer) -> None:
    """Add the ``sae`` group (``list``, ``eval``) to the ``steer`` app."""
    group = typer.Typer(help="Sparse autoencoders: list the available ones.", no_args_is_help=True)
    group.command("list")(sae_list)
    group.command("eval")(sae_eval)
    app.add_typer(group, name="sae")


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


def sae_eval(
    sae: str = typer.Argument(..., help="Builtin SAE name or SAE folder."),
    data: list[Path] = texts_option(
        "--data", "Text files (txt, JSONL, chat JSON); repeat for several.", what="data file"
    ),
    model: str = model_option(),
    max_tokens: int = typer.Option(50_000, min=128, help="Tokens for reconstruction metrics."),
    ce_tokens: int = typer.Option(16_384, min=128, help="Tokens for the loss metrics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Reconstruction and downstream-loss metrics of an SAE on held-out text."""
    from steer.corpus.documents import read_documents
    from steer.sae.loading import load_sae_and_model
    from steer.training.evaluate import evaluate_sae

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
    for warning in metrics.get("warnings", []):
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"{folder.name} on {', '.join(p.name for p in data)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out_console().print(table)
