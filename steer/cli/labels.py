"""``steer features contrast`` and ``steer features label``: rank features that separate two
sets of texts, and name features in the labels file beside an SAE."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from steer.cli.common import debug_option, err_console, model_option, out_console, texts_option
from steer.errors import SteerError

SOURCES = ("manual", "contrast", "auto")


def register(app: typer.Typer) -> None:
    """Add the ``contrast`` and ``label`` commands to the ``features`` group ``app``."""
    app.command("label")(label)
    app.command("contrast")(contrast)


def label(
    sae: str = typer.Argument(..., help="Builtin SAE name or SAE folder."),
    feature: str | None = typer.Argument(None, metavar="[ID]", help="Feature id (or its label)."),
    name: str | None = typer.Argument(None, help="The label to give the feature."),
    description: str = typer.Option("", "--description", "-d", help="What its contexts show."),
    source: str = typer.Option("manual", help="Who named it: manual, contrast or auto."),
    remove: bool = typer.Option(False, "--remove", help="Remove the feature's label."),
    list_: bool = typer.Option(False, "--list", help="Show every label of the SAE."),
    as_json: bool = typer.Option(False, "--json", help="With --list: one JSON object."),
    debug: bool = debug_option(),
) -> None:
    """Name a feature (labels.json beside the SAE), remove a name, or --list the names."""
    from steer.sae import read_sae_config
    from steer.sae.labels import Label, check_label_name, labels_path, load_labels, save_labels
    from steer.sae.sources import sae_folder

    folder = sae_folder(sae)
    labels = load_labels(folder)
    if list_:
        if feature is not None or remove:
            raise SteerError("--list takes only the SAE")
        _print_labels(folder, labels, as_json=as_json)
        return
    if feature is None:
        raise SteerError("give a feature ID (and a NAME), or --list")
    d_sae = read_sae_config(folder).d_sae
    fid = _feature_id(labels, feature, d_sae=d_sae, sae=folder.name)
    if remove:
        if name is not None:
            raise SteerError("--remove takes the SAE and the feature ID only")
        if fid not in labels:
            raise SteerError(f"feature {fid} has no label", where=str(labels_path(folder)))
        old = labels.pop(fid)
        save_labels(folder, labels)
        typer.echo(f"removed label {old.name!r} of feature {fid} ({labels_path(folder)})")
        return
    name = check_label_name(name)
    if source not in SOURCES:
        raise SteerError(f"--source must be one of {', '.join(SOURCES)} (got {source!r})")
    for other, lab in labels.items():
        if other != fid and lab.name.casefold() == name.casefold():
            raise SteerError(
                f"label {name!r} already names feature {other} (labels are unique per SAE; "
                f"remove it first: steer features label {sae} {other} --remove)"
            )
    labels[fid] = Label(name=name, description=description, source=source)
    path = save_labels(folder, labels)
    typer.echo(f"feature {fid} is now {name!r} ({path})")


def _feature_id(labels, ref: str, *, d_sae: int, sae: str) -> int:
    from steer.sae.labels import resolve_feature

    token = ref.strip()
    value: int | str = int(token) if token.lstrip("-").isdigit() else token
    return resolve_feature(labels, value, d_sae=d_sae, where="ID", sae=sae)


def _print_labels(folder: Path, labels, *, as_json: bool) -> None:
    import json
    from dataclasses import asdict

    if as_json:
        feats = {str(k): asdict(v) for k, v in sorted(labels.items())}
        typer.echo(json.dumps({"sae": folder.name, "features": feats}, indent=2))
        return
    if not labels:
        typer.echo(f"no labels for {folder.name} yet (add one: steer features label SAE ID NAME)")
        return
    table = Table(title=f"labels of {folder.name} ({len(labels)})")
    table.add_column("id", justify="right")
    table.add_column("name")
    table.add_column("source")
    table.add_column("description")
    for fid, lab in sorted(labels.items()):
        table.add_row(str(fid), lab.name, lab.source, lab.description)
    out_console().print(table)


def contrast(
    sae: str = typer.Argument(..., help="Builtin SAE name or SAE folder."),
    pos: Path = texts_option("--pos", "Positive texts: one per line, or JSONL text."),
    neg: Path = texts_option("--neg", "Negative texts: one per line, or JSONL text."),
    top: int = typer.Option(20, "--top", min=1, help="How many features to show."),
    max_texts: int | None = typer.Option(None, "--max-texts", min=1, help="Texts per set."),
    model: str = model_option(),
    ctx_len: int = typer.Option(128, "--ctx-len", min=2, help="Tokens read per text."),
    batch: int = typer.Option(8, "--batch", min=1, help="Texts per forward pass."),
    save_labels_prefix: str | None = typer.Option(
        None, "--save-labels", metavar="PREFIX", help="Label the best few PREFIX-pos-1, ..."
    ),
    save_top: int = typer.Option(3, "--save-top", min=1, help="How many to label per side."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Rank features by how well they separate two sets of texts (AUROC, Cohen's d)."""
    from steer.corpus.texts import read_texts
    from steer.features import contrast as ct
    from steer.sae.labels import check_label_name, load_labels
    from steer.sae.loading import load_sae_and_model

    if save_labels_prefix is not None:  # before the model loads
        check_label_name(save_labels_prefix, what="--save-labels")
    folder, loaded, lm = load_sae_and_model(sae, model=model)
    pos_texts = read_texts(pos, lm.tokenizer, max_texts=max_texts)
    neg_texts = read_texts(neg, lm.tokenizer, max_texts=max_texts)
    kwargs = {"ctx_len": ctx_len, "batch": batch, "progress": not as_json}
    pos_acts = ct.pooled_activations(lm, loaded, pos_texts, desc="pos texts", **kwargs)
    neg_acts = ct.pooled_activations(lm, loaded, neg_texts, desc="neg texts", **kwargs)
    rows = ct.with_labels(ct.contrast(pos_acts, neg_acts), load_labels(folder))
    saved: list[str] = []
    if save_labels_prefix:
        saved = _save_contrast_labels(folder, rows, save_labels_prefix, save_top, pos, neg)
    shown = rows[:top]
    if as_json:
        meta = {"sae": folder.name, "pos": str(pos), "neg": str(neg)}
        typer.echo(ct.to_json(shown, n_pos=len(pos_texts), n_neg=len(neg_texts), **meta))
        return
    table = Table(
        title=f"{folder.name}: {pos.name} (+, {len(pos_texts)} texts) vs "
        f"{neg.name} (-, {len(neg_texts)} texts)"
    )
    for col in ("feature", "dir", "AUROC", "d", "mean+", "mean-", "fire+", "fire-"):
        table.add_column(col, justify="right")
    table.add_column("label", overflow="fold", min_width=12)
    for r in shown:
        table.add_row(
            str(r.feature),
            r.direction,
            f"{r.auroc:.3f}",
            f"{r.cohens_d:+.2f}",
            f"{r.mean_pos:.2f}",
            f"{r.mean_neg:.2f}",
            f"{r.fire_pos:.0%}",
            f"{r.fire_neg:.0%}",
            r.label or "",
        )
    out_console().print(table)
    err_console.print(
        "dir +: fires more on --pos; d: Cohen's d; mean: max activation per text, "
        "averaged; fire: share of texts where it fires",
        style="dim",
    )
    for line in saved:
        err_console.print(line, highlight=False)


def _save_contrast_labels(folder: Path, rows, prefix: str, per_side: int, pos, neg) -> list[str]:
    """Label the best ``per_side`` features of each direction ``PREFIX-pos-i`` / ``-neg-i``.

    Features that already carry a label keep it; an earlier contrast label with the same name
    is replaced; a manual label with the same name is an error (nothing is written then).
    """
    from steer.sae.labels import Label, load_labels, save_labels

    labels = load_labels(folder)
    picks: list[tuple[str, object]] = []
    for side, want in (("pos", "+"), ("neg", "-")):
        chosen = [r for r in rows if r.direction == want and r.auroc != 0.5]
        chosen = [r for r in chosen if r.feature not in labels][:per_side]
        picks += [(f"{prefix}-{side}-{i + 1}", r) for i, r in enumerate(chosen)]
    for name, _ in picks:
        for fid, lab in list(labels.items()):
            if lab.name.casefold() == name.casefold():
                if lab.source != "contrast":
                    raise SteerError(f"--save-labels: {name!r} already names feature {fid}")
                del labels[fid]
    lines = []
    for name, r in picks:
        desc = f"AUROC {r.auroc:.3f}, d {r.cohens_d:+.2f}: {Path(pos).name} vs {Path(neg).name}"
        labels[r.feature] = Label(name=name, description=desc, source="contrast")
        lines.append(f"labelled feature {r.feature} {name!r}")
    path = save_labels(folder, labels)
    return [*lines, f"saved {len(picks)} labels to {path}"]
