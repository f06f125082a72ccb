"""``steer sae list`` and ``steer sae eval``: the shipped SAEs, and an SAE's metrics on held-out
text."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from steer.cli.common import debug_option, err_console, model_option, out_console, texts_option
from steer.errors import SteerError


def register(app: typer.Typer) -> None:
    """Add the ``sae`` group (``list``, ``eval``, ``convert``) to the ``steer`` app."""
    group = typer.Typer(
        help="Sparse autoencoders: list, evaluate and convert them.", no_args_is_help=True
    )
    group.command("list")(sae_list)
    group.command("eval")(sae_eval)
    group.command("convert")(sae_convert)
    app.add_typer(group, name="sae")


def sae_list(
    release: str | None = typer.Option(
        None,
        "--release",
        help="List the SAE ids of this SAELens release; 'all' lists the releases.",
    ),
    debug: bool = debug_option(),
) -> None:
    """Show the SAEs shipped with steer, with their paths (or a SAELens release's SAEs)."""
    from steer.sae import read_sae_config
    from steer.sae.sources import builtin_saes

    if release is not None:
        _list_release(release)
        return
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
    from steer.sae.fit import sae_hook
    from steer.sae.loading import load_sae_and_model
    from steer.training.evaluate import evaluate_sae

    folder, loaded, lm = load_sae_and_model(sae, model=model)
    texts = [doc for path in data for doc in read_documents(path, lm.tokenizer)]
    hook = sae_hook(loaded, site=None, layer=None, where=str(folder))
    metrics = evaluate_sae(
        lm,
        loaded,
        hook,
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


def _list_release(name: str) -> None:
    from steer.sae.releases import REFUSED_LAYOUTS, find_release, release_list

    releases = release_list()
    if name == "all":
        for release in releases.values():
            layout = release.conversion_func or "sae_lens"
            note = "refused" if layout in REFUSED_LAYOUTS else "reads"
            typer.echo(f"{release.name}\t{release.model}\t{layout} ({note})\t{len(release.paths)}")
        return
    first = next(iter(releases[name].paths), "") if name in releases else ""
    found = find_release(name, first, where="")
    for sae_id, path in found.paths.items():
        typer.echo(f"{sae_id}\t{found.repo_id}/{path}")


def sae_convert(
    source: str = typer.Argument(
        ...,
        help="Builtin name, SAE folder or file in any layout steer reads, or a SAELens "
        "RELEASE/SAE_ID.",
    ),
    out: Path = typer.Argument(..., help="New folder for the SAELens-format copy."),
    debug: bool = debug_option(),
) -> None:
    """Write any SAE steer reads as a SAELens folder (cfg.json + sae_weights.safetensors).

    Settings that are a fixed rescaling (a release's norm_scaling_factor, TopK decoder-norm
    rescaling) are folded into the weights, so SAELens and steer read the copy alike.
    """
    from steer.io import check_writable_dir
    from steer.sae import load_sae, save_sae
    from steer.sae.sources import sae_source

    target = out.expanduser()
    check_writable_dir(target, what="output")
    if target.is_dir() and any(target.iterdir()):
        raise SteerError("is not empty; give a new folder (nothing is replaced)", where=str(out))
    path, overrides = sae_source(source)
    sae = load_sae(path, overrides=overrides)
    save_sae(sae, target, extra_metadata={"converted_from": str(source)})
    cfg = sae.cfg
    typer.echo(
        f"{target}: {cfg.architecture} d_in={cfg.d_in} d_sae={cfg.d_sae} "
        f"hook={cfg.hook_name or cfg.hf_hook_name or 'unknown'}"
    )
