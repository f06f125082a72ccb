"""``steer features ...``: find and name SAE features (index, show, search, dashboard).

The ``contrast`` and ``label`` commands live in :mod:`steer.cli.labels` and join the same
group in :func:`register`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text

from steer.cli.common import debug_option, err_console, model_option, out_console, texts_option


def register(app: typer.Typer) -> None:
    """Add the ``features`` group to the ``steer`` app (with ``contrast`` and ``label`` from
    :mod:`steer.cli.labels`)."""
    from steer.cli import labels

    group = typer.Typer(
        help="Find and name SAE features: index, show, search, contrast, label, dashboard.",
        no_args_is_help=True,
    )
    for name, command in (
        ("index", index),
        ("show", show),
        ("search", search),
        ("dashboard", dashboard),
    ):
        group.command(name)(command)
    labels.register(group)
    app.add_typer(group, name="features")


SAE_ARG = typer.Argument(..., metavar="SAE", help="Builtin SAE name or SAE folder.")
DB_OPTION = typer.Option(None, "--db", help="Index file (default: features.sqlite in the SAE).")
MODEL_OPTION = model_option()


def index(
    sae: str = SAE_ARG,
    data: list[Path] = texts_option(
        "--data",
        "Text files or folders (txt, JSONL, JSON); repeat for several.",
        what="data file",
        folders=True,
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=128, help="Index this many tokens, shared evenly by the sources."
    ),
    top_k: int = typer.Option(20, "--top-k", min=1, help="Top contexts kept per feature."),
    context_tokens: int = typer.Option(24, "--context", min=2, help="Tokens per context."),
    samples: int = typer.Option(
        24, "--samples", min=0, help="Quantile samples kept per feature (0: top contexts only)."
    ),
    db: Path | None = DB_OPTION,
    model: str = MODEL_OPTION,
    rebuild: bool = typer.Option(False, "--rebuild", help="Replace an index of other data."),
    flush_every: int = typer.Option(256, min=1, help="Windows between resumable flushes."),
    debug: bool = debug_option(),
) -> None:
    """Index every feature over a corpus: top contexts, density, histogram, output tokens.

    Rerunning the same command continues an interrupted build. Under ``torchrun`` the
    processes share the work and rank 0 writes the index a single process would have written.
    """
    from contextlib import nullcontext

    from steer.distributed import quiet_unless_main, world
    from steer.features.index import build_index
    from steer.features.index_db import check_index_target
    from steer.sae.loading import load_sae_and_model, sae_folder

    sae_folder(sae)  # an unknown SAE fails before the model loads
    if db is not None:  # and an output that cannot be written, before the model loads
        check_index_target(db, rebuild=rebuild)
    w = world()  # under torchrun: joins the group (and picks this rank's GPU) before loading
    quiet_unless_main(w)  # rank 0 speaks for the run
    with err_console.status("loading the model and SAE") if w.is_main else nullcontext():
        folder, loaded, lm = load_sae_and_model(sae, model=model)
    result = build_index(
        lm,
        loaded,
        folder,
        data,
        db=db,
        max_tokens=max_tokens,
        top_k=top_k,
        context_tokens=context_tokens,
        samples=samples,
        flush_every=flush_every,
        rebuild=rebuild,
        world=w,
    )
    if not w.is_main:  # rank 0 speaks for the run
        return
    if result.status == "up-to-date":
        typer.echo(f"index is complete and up to date: {result.path} (--rebuild to redo it)")
        return
    size = result.path.stat().st_size / 1e6
    typer.echo(
        f"{result.status}: {result.path} ({result.tokens} tokens in {result.windows} windows, "
        f"{size:.1f} MB, {result.seconds:.0f} s)"
    )


def _open_index(sae: str, db: Path | None):
    """``(folder, index)`` for an SAE's feature index, checked against the SAE's weights; a
    shipped SAE that ships no index gets one built on first use, into the steer cache."""
    from steer.features.shipped_index import open_feature_index

    return open_feature_index(sae, db)


def _feature_ref(ref: str) -> int | str:
    """A feature given on the command line: digits are an id, anything else a label."""
    stripped = ref.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped


def show(
    sae: str = SAE_ARG,
    feature: str = typer.Argument(..., metavar="ID", help="Feature id or label."),
    db: Path | None = DB_OPTION,
    contexts: int = typer.Option(10, "--contexts", min=1, help="Top contexts to show."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Show one feature: statistics, histogram, output tokens, shaded top contexts."""
    from dataclasses import asdict

    from steer.features.render import print_feature
    from steer.sae.labels import load_labels, resolve_feature

    folder, index = _open_index(sae, db)
    with index:
        labels = load_labels(folder)
        fid = resolve_feature(
            labels, _feature_ref(feature), d_sae=index.d_sae, where=f"feature {feature!r}", sae=sae
        )
        record = index.feature(fid)
        label = labels.get(fid)
        if as_json:
            out = asdict(record)
            out["label"] = asdict(label) if label else None
            typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
            return
        if not index.complete:
            err_console.print("note: the index is partial", style="yellow")
        print_feature(out_console(), record, label=label, meta=index.meta, contexts=contexts)


def search(
    sae: str = SAE_ARG,
    text: str = typer.Argument(..., help="The text to run through the model."),
    top: int = typer.Option(10, "--top", min=1, help="Features to list for the whole text."),
    per_token: int = typer.Option(3, "--per-token", min=1, help="Features to list per token."),
    rank: str = typer.Option(
        "specific",
        "--rank",
        help="specific: activation x log10(1/density) (rare features first, needs the index); "
        "activation: the max activation alone.",
    ),
    max_density: float | None = typer.Option(
        None, "--max-density", min=0.0, max=1.0, help="Leave out features firing more often."
    ),
    db: Path | None = DB_OPTION,
    model: str = MODEL_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Which features fire on a text: per token, and overall (max over its tokens)."""

    from steer.errors import SteerError
    from steer.features.search import RANKINGS, search_text
    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_and_model, sae_folder

    if rank not in RANKINGS:
        raise SteerError(f"--rank must be one of {', '.join(RANKINGS)} (got {rank!r})")
    if max_density is not None and max_density <= 0:
        raise SteerError("--max-density must be above 0 (at 0 only features that never fire pass)")
    folder = sae_folder(sae)
    labels = load_labels(folder)
    densities: dict[int, float] = {}
    no_index = ""
    try:
        _folder, index = _open_index(sae, db)
    except SteerError as exc:
        if db is not None:  # an index the user named must be there
            raise
        no_index = str(exc)
    else:
        with index:
            densities = index.densities()
    with err_console.status("loading the model and SAE"):
        folder, loaded, lm = load_sae_and_model(sae, model=model)
    result = search_text(
        lm,
        loaded,
        text,
        top=top,
        per_token=per_token,
        labels=labels,
        densities=densities,
        rank=rank,
        max_density=max_density,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    _print_search(result, no_index)


def _print_search(result, no_index: str) -> None:
    """The per-token and overall tables of a search (``no_index``: why densities are missing)."""
    from rich.table import Table

    console = out_console()
    tokens = Table(title="per token", title_justify="left")
    tokens.add_column("#", justify="right")
    tokens.add_column("token")
    tokens.add_column("features (id act label)")
    for t in result.tokens:
        hits = ", ".join(
            f"{h.feature} {h.act:.1f}" + (f" {h.label}" if h.label else "") for h in t.features
        )
        tokens.add_row(
            str(t.position), repr(t.token), hits if t.encoded else Text("not encoded", "dim")
        )
    console.print(tokens)
    overall = Table(title="overall (max over tokens)", title_justify="left")
    for name, justify in (
        ("feature", "right"),
        ("max act", "right"),
        ("at token", "left"),
        ("label", "left"),
        ("density", "right"),
    ):
        overall.add_column(name, justify=justify)
    if no_index:
        err_console.print(f"densities not shown: {no_index}", style="dim", highlight=False)
    for h in result.overall:
        overall.add_row(
            str(h.feature),
            f"{h.act:.2f}",
            repr(h.token),
            h.label or "",
            f"{h.density:.3%}" if h.density is not None else "",
        )
    console.print(overall)


def dashboard(
    sae: str = SAE_ARG,
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder for the site: new, empty, or a dashboard written before (then replaced).",
    ),
    features: int = typer.Option(
        0, "--features", min=0, help="Pages for this many features (labelled first; 0 = all)."
    ),
    db: Path | None = DB_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Replace --out even if it holds files steer did not write."
    ),
    debug: bool = debug_option(),
) -> None:
    """Write a static HTML dashboard of the feature index (open OUT/index.html)."""
    from steer.features.dashboard import check_output, write_dashboard
    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_only

    check_output(out, force=force)  # before the SAE is loaded
    folder, index = _open_index(sae, db)
    with index:
        _folder, loaded = load_sae_only(folder)  # its decoder gives the nearest features
        result = write_dashboard(
            index,
            load_labels(folder),
            out,
            limit=features or None,
            decoder=loaded.W_dec,
            sae=sae,
            force=force,
        )
    typer.echo(f"wrote {result.pages} feature pages: {result.path / 'index.html'}")
