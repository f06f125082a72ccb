"""``steer features explain`` and ``steer features score``: auto-interpretability with any
model the ``llm`` library knows (see :mod:`steer.evaluation.autointerp`). They join the
``features`` group that :mod:`steer.cli.features` creates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from steer.cli.common import debug_option, err_console, model_option, out_console, texts_option
from steer.errors import SteerError

SAE_ARG = typer.Argument(..., metavar="SAE", help="Builtin SAE name or SAE folder.")
ID_ARG = typer.Argument(..., metavar="ID", help="Feature id or label.")
DB_OPTION = typer.Option(None, "--db", help="Index file (default: features.sqlite in the SAE).")
OFFLINE = "steer-smollm2"


def register(app: typer.Typer) -> None:
    """Add ``explain`` and ``score`` to the ``features`` group (registered before this)."""
    group = next(g.typer_instance for g in app.registered_groups if g.name == "features")
    group.command("explain")(explain)
    group.command("score")(score)
    group.command("compare-bases")(compare_bases)


def open_feature(sae: str, feature: str, db: Path | None):
    """``(folder, index, feature id, labels)`` for a feature named by id or label."""
    from steer.features.shipped_index import open_feature_index
    from steer.sae.labels import load_labels, resolve_feature

    # A shipped SAE that ships no index gets one built on first use (in the steer cache).
    folder, index = open_feature_index(sae, db)
    labels = load_labels(folder)
    ref = feature.strip()
    ref = int(ref) if ref.lstrip("-").isdigit() else ref
    fid = resolve_feature(labels, ref, d_sae=index.d_sae, where=f"feature {feature!r}", sae=sae)
    return folder, index, fid, labels


def label_name(explanation: str, fid: int, labels: dict) -> str:
    """A label name from the explanation's first words (``-<id>`` added if another feature
    already has it)."""
    words = re.findall(r"[a-z0-9]+", explanation.lower())[:4]
    name = "-".join(words)[:40].strip("-") or f"auto-{fid}"
    if name.isdigit():
        name = f"auto-{name}"
    taken = {lab.name.lower() for i, lab in labels.items() if i != fid}
    return f"{name}-{fid}" if name.lower() in taken else name


def save_auto_label(folder, labels, fid, explanation, note, *, force: bool) -> str | None:
    """Store the explanation as the feature's label (``source: auto``); a label a person
    wrote is kept unless ``force``. Returns the stored name, or None when kept."""
    from steer.sae.labels import Label, save_labels

    old = labels.get(fid)
    if old is not None and old.source != "auto" and not force:
        return None
    name = (
        old.name
        if old is not None and old.source == "auto"
        else label_name(explanation, fid, labels)
    )
    labels[fid] = Label(name=name, description=f"{explanation} ({note})", source="auto")
    save_labels(folder, labels)
    return name


def explain(
    sae: str = SAE_ARG,
    feature: str = ID_ARG,
    explainer: str = typer.Option(OFFLINE, "--explainer", help="llm model id or alias."),
    scorer: str | None = typer.Option(
        None, "--scorer", help="Also score the explanation with this llm model."
    ),
    examples: int = typer.Option(10, "--examples", min=1, help="Contexts shown (and scored)."),
    db: Path | None = DB_OPTION,
    save: bool = typer.Option(True, "--save/--no-save", help="Store it as the feature's label."),
    force: bool = typer.Option(False, "--force", help="Replace a label a person wrote."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Explain a feature from its top contexts with an explainer model (and score it)."""
    from steer.evaluation.autointerp import asker
    from steer.evaluation.autointerp import explain as explain_feature
    from steer.evaluation.autointerp import score as score_feature

    folder, index, fid, labels = open_feature(sae, feature, db)
    ask = asker(explainer)
    ask_scorer = asker(scorer) if scorer else None  # both checked before any call
    with index:
        text = explain_feature(index, fid, ask, examples=examples)
        scored = score_feature(index, fid, text, ask_scorer, n=examples) if ask_scorer else None
    note = f"auto: explained by {explainer}"
    if scored is not None:
        note += f"; detection {scored.detection:.2f}, fuzzing {scored.fuzzing:.2f} by {scorer}"
    stored = save_auto_label(folder, labels, fid, text, note, force=force) if save else None
    result = {
        "feature": fid,
        "explanation": text,
        "explainer": explainer,
        "scorer": scorer,
        "scores": scored.to_dict() if scored else None,
        "label": stored,
    }
    report(result, as_json, kept=save and stored is None)


def score(
    sae: str = SAE_ARG,
    feature: str = ID_ARG,
    explanation: str | None = typer.Option(
        None, "--explanation", help="Explanation to score (default: the feature's label)."
    ),
    scorer: str = typer.Option(OFFLINE, "--scorer", help="llm model id or alias."),
    examples: int = typer.Option(10, "--examples", min=1, help="Firing contexts scored."),
    seed: int = typer.Option(0, "--seed", help="Draws the contexts."),
    db: Path | None = DB_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Score an explanation of a feature by detection and fuzzing with a scorer model."""
    from steer.evaluation.autointerp import asker
    from steer.evaluation.autointerp import score as score_feature

    _folder, index, fid, labels = open_feature(sae, feature, db)
    if explanation is None:
        label = labels.get(fid)
        if label is None:
            raise SteerError(f"feature {fid} has no label: give --explanation")
        explanation = label.description.split(" (auto:")[0] or label.name
    elif not explanation.strip():
        raise SteerError("--explanation is empty")
    ask = asker(scorer)
    with index:
        scored = score_feature(index, fid, explanation, ask, n=examples, seed=seed)
    result = {"feature": fid, "explanation": explanation, "scorer": scorer, **scored.to_dict()}
    report(result, as_json)


def report(result: dict, as_json: bool, *, kept: bool = False) -> None:
    """Print the result (JSON, or lines) and say when a person's label was kept."""
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        for key, value in result.items():
            if value is not None:
                typer.echo(f"{key}: {value}")
    if kept:
        err_console.print("note: the feature's label was written by a person; kept (--force)")


def compare_bases(
    sae: str = SAE_ARG,
    data: list[Path] = texts_option(
        "--data",
        "Text files or folders to find top contexts in (default: the shipped corpus).",
        folders=True,
        required=False,
    ),
    directions: int = typer.Option(20, "--directions", min=2, help="Directions per basis."),
    examples: int = typer.Option(10, "--examples", min=2, help="Contexts scored per direction."),
    max_tokens: int = typer.Option(20000, "--max-tokens", min=1024, help="Tokens read."),
    scorer: str = typer.Option(
        "lexical", "--scorer", help="lexical (offline, no model) or an llm model id."
    ),
    seed: int = typer.Option(0, "--seed", help="Draws the directions and contexts."),
    model: str = model_option(),
    out: Path | None = typer.Option(None, "--out", help="Write the result as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Score SAE features against neurons, PCA, ICA and random directions of the same count
    at the same site (Cunningham et al. 2023), with the same contexts and scorer."""
    from steer.corpus.documents import read_documents, source_files
    from steer.corpus.shipped import shipped_corpus_dir
    from steer.evaluation.autointerp import asker
    from steer.evaluation.bases import BASES
    from steer.evaluation.bases import compare_bases as compare
    from steer.io import atomic_write_text, check_writable
    from steer.sae.fit import sae_hook
    from steer.sae.loading import load_sae_and_model

    if out is not None:
        check_writable(out, what="--out")
    ask = None if scorer.strip() == "lexical" else asker(scorer)
    try:
        import sklearn  # noqa: F401  (ICA)
    except ImportError:
        raise SteerError("compare-bases needs scikit-learn: pip install 'steer[bases]'") from None
    folder, loaded, lm = load_sae_and_model(sae, model=model)
    if data:
        texts = [t for p in source_files(data) for t in read_documents(p, lm.tokenizer)]
    else:  # the shipped corpus's prose (not the red-team requests)
        root = shipped_corpus_dir()
        files = [root / "wikitext2-excerpt.txt", *sorted((root / "train-sample").rglob("*.txt"))]
        texts = [p.read_text(encoding="utf-8") for p in files]
    hook = sae_hook(loaded, site=None, layer=None, where=str(folder))
    result = compare(
        lm,
        loaded,
        hook,
        texts,
        k=directions,
        n=examples,
        ask=ask,
        seed=seed,
        max_tokens=max_tokens,
    )
    result.update(sae=sae, scorer=scorer, site=str(hook))
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"{directions} directions per basis at {hook}, scorer {scorer}")
    for column in ("basis", "detection", "fuzzing"):
        table.add_column(column, justify="left" if column == "basis" else "right")
    for name in BASES:
        summary = result["bases"][name]["summary"]
        cells = [f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]" for s in summary.values()]
        table.add_row(name, *cells)
    out_console().print(table)
