"""``steer probe train`` and ``steer probe eval``: a logistic-regression baseline on one
layer's residual stream, pooled per text, to compare the SAE monitors with."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from steer.cli.common import debug_option, model_option, texts_option
from steer.errors import SteerError


def register(app: typer.Typer) -> None:
    """Add the ``probe`` group (``train``, ``eval``) to the ``steer`` app."""
    group = typer.Typer(
        help="Linear probes on a layer's residual stream: train, eval.", no_args_is_help=True
    )
    group.command("train")(train)
    group.command("eval")(evaluate)
    app.add_typer(group, name="probe")


MODEL_HELP = "Model to read (default for eval: the probe's own)."


def _pooled(lm, layer: int, pos: Path, neg: Path, *, max_texts, ctx_len, batch, quiet):
    from steer.corpus.texts import read_texts
    from steer.monitoring.probe import pooled_residuals

    out = []
    for side, path in (("pos", pos), ("neg", neg)):
        texts = read_texts(path, lm.tokenizer, max_texts=max_texts)
        out.append(
            pooled_residuals(
                lm, layer, texts, ctx_len=ctx_len, batch=batch, progress=not quiet, desc=side
            )
        )
    return out


def train(
    pos: Path = texts_option("--pos", "Positive texts: one per line, or JSONL text."),
    neg: Path = texts_option("--neg", "Negative texts: one per line, or JSONL text."),
    layer: int = typer.Option(12, "--layer", min=0, help="Residual stream after this block."),
    out: Path = typer.Option(..., "--out", help="Probe file (.safetensors or .json)."),
    pooling: str = typer.Option("mean", help="Pool positions per text: mean or max."),
    l2: float = typer.Option(1e-3, "--l2", min=0.0, help="L2 penalty on standardised weights."),
    model: str = model_option("Model to read."),
    max_texts: int | None = typer.Option(None, "--max-texts", min=1, help="Texts per set."),
    ctx_len: int = typer.Option(128, "--ctx-len", min=2, help="Tokens read per text."),
    batch: int = typer.Option(8, "--batch", min=1, help="Texts per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Train a logistic-regression probe separating --pos texts from --neg texts."""
    from steer.features.contrast import auroc
    from steer.io import check_writable, file_sha256
    from steer.model import load_model
    from steer.monitoring.probe import POOLINGS, save_probe, train_probe

    if pooling not in POOLINGS:
        raise SteerError(f"--pooling must be one of {', '.join(POOLINGS)} (got {pooling!r})")
    if not math.isfinite(l2):
        raise SteerError(f"--l2 must be a finite number (got {l2})")
    if out.suffix not in (".safetensors", ".json"):
        raise SteerError("--out must end in .safetensors or .json", where=str(out))
    check_writable(out, what="probe")  # before the model loads
    lm = load_model(model)
    if layer >= lm.n_layers:
        raise SteerError(f"--layer {layer} is out of range (the model has {lm.n_layers})")
    p, n = _pooled(
        lm, layer, pos, neg, max_texts=max_texts, ctx_len=ctx_len, batch=batch, quiet=as_json
    )
    meta = {
        "model": model,
        "layer": layer,
        "pooling": pooling,
        "d_model": int(lm.d_model),
        "ctx_len": ctx_len,
        "l2": l2,
        "n_pos": int(p[pooling].shape[0]),
        "n_neg": int(n[pooling].shape[0]),
        "train_files": {
            "pos": {"path": str(pos), "sha256": file_sha256(pos)},
            "neg": {"path": str(neg), "sha256": file_sha256(neg)},
        },
    }
    probe = train_probe(p[pooling], n[pooling], l2=l2, meta=meta)
    train_auroc = float(auroc(probe.logits(p[pooling])[:, None], probe.logits(n[pooling])[:, None]))
    probe.meta["train_auroc"] = round(train_auroc, 6)
    save_probe(probe, out)
    if as_json:
        typer.echo(json.dumps({"probe": str(out), **probe.meta}, indent=2))
    else:
        typer.echo(
            f"probe saved: {out} (layer {layer}, {pooling} pooling, {meta['n_pos']} pos / "
            f"{meta['n_neg']} neg texts, train AUROC {train_auroc:.3f})"
        )


def evaluate(
    probe_path: Path = typer.Argument(..., metavar="PROBE", help="Probe file from probe train."),
    pos: Path = texts_option("--pos", "Positive texts: one per line, or JSONL text."),
    neg: Path = texts_option("--neg", "Negative texts: one per line, or JSONL text."),
    layer: int | None = typer.Option(None, "--layer", help="Fail unless the probe reads it."),
    model: str | None = typer.Option(None, help=MODEL_HELP),
    max_texts: int | None = typer.Option(None, "--max-texts", min=1, help="Texts per set."),
    batch: int = typer.Option(8, "--batch", min=1, help="Texts per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """AUROC and accuracy of a probe on held-out --pos and --neg texts."""
    from steer.features.contrast import auroc
    from steer.model import load_model
    from steer.monitoring.probe import POOLINGS, check_probe_fits, load_probe

    probe = load_probe(probe_path)
    where = str(probe_path)
    p_layer = check_probe_fits(probe, model_name=model, layer=layer, where=where)
    pooling = probe.meta.get("pooling")
    if pooling not in POOLINGS:
        raise SteerError(f"probe file has an unknown pooling {pooling!r}", where=where)
    model_name = model or probe.meta.get("model")
    if not isinstance(model_name, str):
        raise SteerError("probe file does not name its model (give --model)", where=where)
    lm = load_model(model_name)
    check_probe_fits(probe, d_model=int(lm.d_model), where=where)
    if p_layer >= lm.n_layers:
        raise SteerError(f"the probe's layer {p_layer} is not in the model", where=where)
    ctx_len = int(probe.meta.get("ctx_len", 128))
    p, n = _pooled(
        lm, p_layer, pos, neg, max_texts=max_texts, ctx_len=ctx_len, batch=batch, quiet=as_json
    )
    lp, ln = probe.logits(p[pooling]), probe.logits(n[pooling])
    result = {
        "probe": where,
        "layer": p_layer,
        "pooling": pooling,
        "n_pos": int(lp.shape[0]),
        "n_neg": int(ln.shape[0]),
        "auroc": round(float(auroc(lp[:, None], ln[:, None])), 6),
        "accuracy": round(float(((lp > 0).sum() + (ln <= 0).sum()) / (len(lp) + len(ln))), 6),
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"{where}: AUROC {result['auroc']:.3f}, accuracy {result['accuracy']:.3f} "
            f"({result['n_pos']} pos / {result['n_neg']} neg texts, layer {p_layer}, "
            f"{pooling} pooling)"
        )
