"""``steer monitor eval``: fit every detector kind on some labelled sets and judge it on
another (leave one dataset out), with bootstrap CIs. Texts are never printed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from steer.cli.common import debug_option, err_console, model_option
from steer.errors import SteerError

SHIPPED_SAE = "smollm2-135m-res12-topk"


def _parse_sets(values: list[str]) -> dict[str, str]:
    """``NAME=SOURCE`` pairs (``SOURCE`` alone: a file whose stem is the name); one line per
    mistake. ``SOURCE`` is a labelled JSONL file, or ``POS,NEG``: two text files."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep:
            name, source = Path(value.split(",")[0]).stem, value
        name, source = name.strip(), source.strip()
        if not name or not source or source.startswith(",") or source.endswith(","):
            raise SteerError(f"--set takes NAME=FILE.jsonl or NAME=POS,NEG (got {value!r})")
        if name in out:
            raise SteerError(f"--set: two sets are named {name!r}")
        out[name] = source
    if len(out) < 2:
        raise SteerError("--set: give at least two labelled sets (fit on some, test on another)")
    return out


def _read_set(name: str, source: str):
    """The labelled set ``source`` names (see :func:`_parse_sets`), checked to be splittable."""
    from steer.monitoring.labelled import check_classes, labelled_from_texts, read_labelled
    from steer.monitoring.transfer import MIN_PER_CLASS_TO_SPLIT

    if "," in source:
        pos, neg = source.split(",", 1)
        data = labelled_from_texts(name, pos.strip(), neg.strip())
    else:
        data = read_labelled(source, name=name)
    where = source if "," not in source else name
    check_classes(where, data.n_pos, data.n_neg, minimum=MIN_PER_CLASS_TO_SPLIT)
    return data


def _kinds(value: str) -> list[str]:
    from steer.monitoring.detectors import KINDS

    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        got = ", ".join(unknown) or repr(value)
        raise SteerError(f"--detectors: unknown {got} (known: {', '.join(KINDS)})")
    return list(dict.fromkeys(kinds))


def evaluate(
    sets: list[str] = typer.Option(
        ...,
        "--set",
        help="A labelled set: NAME=FILE.jsonl (records: text, label 0/1), or NAME=POS,NEG "
        "(text files, one text per line; builtin:NAME works); repeat.",
    ),
    sae: str = typer.Option(SHIPPED_SAE, "--sae", help="Builtin SAE name or SAE folder."),
    model: str = model_option(),
    detectors: str = typer.Option(
        "group,consistent,sparse,sparse-token,dense",
        "--detectors",
        help="Detector kinds to compare, comma-separated.",
    ),
    fpr: float = typer.Option(0.05, "--fpr", help="The fixed false-positive rate (0 to 1)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Resamples for the CIs."),
    l1: float = typer.Option(0.03, "--l1", min=0.0, help="L1 penalty of the sparse probe."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fit/test split and bootstrap."),
    single: bool = typer.Option(False, "--single", help="Also fit on each other set alone."),
    ctx_len: int = typer.Option(128, "--ctx-len", min=2, help="Tokens read per text."),
    batch: int = typer.Option(8, "--batch", min=1, help="Texts per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Also write the results as JSON."),
    debug: bool = debug_option(),
) -> None:
    """Cross-distribution evaluation: per labelled set, each detector fitted on the other
    sets (and on the set's own fit half, for reference), judged on its test half."""
    from steer.monitoring.labelled import encode_labelled

    paths = _parse_sets(sets)
    kinds = _kinds(detectors)
    if not (math.isfinite(fpr) and 0 < fpr < 1):
        raise SteerError(f"--fpr must be between 0 and 1 (got {fpr})")
    if not math.isfinite(l1):
        raise SteerError(f"--l1 must be a finite number (got {l1})")
    # Every file is read and checked (classes, split size) before the model loads.
    data = {name: _read_set(name, source) for name, source in paths.items()}
    if out is not None:
        from steer.io import check_writable

        check_writable(out, what="results")
    from steer.sae.loading import load_sae_and_model

    with err_console.status("loading the model and SAE"):
        folder, sae_, lm = load_sae_and_model(sae, model=model)
    encoded = {
        name: encode_labelled(
            lm, sae_, d.texts, d.labels, ctx_len=ctx_len, batch=batch,
            progress=not as_json, desc=f"encoding {name}",
        )
        for name, d in data.items()
    }  # fmt: skip
    rows = _evaluate(encoded, kinds, fpr=fpr, n_boot=bootstrap, seed=seed, single=single,
                     l1=l1, quiet=as_json)  # fmt: skip
    result = {
        "sae": folder.name,
        "sets": {n: {"source": src, "n_pos": data[n].n_pos, "n_neg": data[n].n_neg}
                 for n, src in paths.items()},
        "fpr": fpr,
        "bootstrap": bootstrap,
        "rows": [r.as_dict() for r in rows],
    }  # fmt: skip
    if out is not None:
        from steer.io import atomic_write_text

        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_rows(rows, kinds, fpr=fpr, sae_name=folder.name)
    if out is not None:
        typer.echo(f"wrote {out}")


def _print_rows(rows, kinds, *, fpr: float, sae_name: str) -> None:
    """The held-out table, then each held-out row's two readings at ``fpr``."""
    from steer.monitoring.transfer import table

    # Plain echo, not the rich console: a markdown table must not be wrapped at 80 columns.
    typer.echo(f"held-out AUROC [95 % CI] (within-set AUROC), SAE {sae_name}:")
    typer.echo(table(rows, kinds=kinds))
    typer.echo(f"\nat {fpr:g} FPR (test set's own threshold | fit data's threshold carried over):")
    for r in rows:
        if r.mode == "held-out":
            t = r.transferred
            reads = f"{r.n_features} {'residual dims' if r.kind == 'dense' else 'features'}"
            typer.echo(
                f"  {r.kind:>12} -> {r.test}: TPR {r.at_fpr['tpr']:.3f}, precision "
                f"{r.at_fpr['precision']:.3f} | TPR {t['tpr']:.3f}, FPR {t['fpr']:.3f} "
                f"(threshold {t['threshold']:g}); {reads}"
            )


def _evaluate(encoded, kinds, *, fpr, n_boot, seed, single, l1, quiet):
    """:func:`cross_evaluate` with a named progress bar over the fits (with an ETA)."""
    from tqdm.auto import tqdm

    from steer.monitoring.transfer import cross_evaluate

    # One fit per set's fit half, and one per "all the others" (the same fit when n == 2);
    # the single-set rows reuse the former.
    n = len(encoded)
    fits = len(kinds) * (n if n == 2 else 2 * n)
    bar = tqdm(total=fits, desc="fitting", unit="fit", disable=quiet, leave=False)

    def step(label: str) -> None:
        bar.set_description(f"fitting {label}")
        bar.update(1)

    with bar:
        return cross_evaluate(
            encoded, kinds=kinds, fpr=fpr, n_boot=n_boot, seed=seed, single=single,
            progress=step, l1=l1,
        )  # fmt: skip
