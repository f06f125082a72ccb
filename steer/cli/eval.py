"""``steer eval``: does a steering recipe work, and what does it cost? The recipe at several
strengths beside no steering, a prompting baseline and a difference-of-means vector, on the
same prompts, with bootstrap intervals (see :mod:`steer.evaluation`)."""

from __future__ import annotations

import json
import math
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
from steer.errors import SteerError
from steer.io import json_lines


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``steer`` app."""
    app.command("eval")(evaluate)


def parse_strengths(text: str) -> list[float]:
    """``"0.5,1,1.5"`` -> ``[0.5, 1.0, 1.5]``: multipliers of the recipe's values, finite,
    positive and distinct."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SteerError(f"--strengths takes numbers separated by commas (got {text!r})") from None
    if not values:
        raise SteerError("--strengths needs at least one number")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise SteerError(f"--strengths must be finite numbers above 0 (got {text!r})")
    return sorted(set(values))


def read_prompts(path: Path | None) -> list[str]:
    """The prompts to evaluate on: one per line (the shipped neutral prompts by default)."""
    from steer.evaluation.concepts import DATA

    path = path or DATA / "neutral-prompts.txt"
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    if len(prompts) < 4:
        raise SteerError(
            f"--prompts needs at least 4 prompts (got {len(prompts)})", where=str(path)
        )
    return prompts


def read_set(path: Path | None) -> list[str] | None:
    """A concept text set (``None`` when not given): one text per line, or JSONL records
    with a ``text`` field."""
    if path is None:
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [t for t in lines if t]
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for where, record in json_lines(path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SteerError("a record needs a text field", where=where)
        texts.append(record["text"])
    return texts


def concept_of(name: str, keywords: str | None, pos: Path | None, neg: Path | None):
    """The concept the options name, with its texts (mined when --pos/--neg are not given)."""
    from steer.evaluation.concepts import load_concept

    words = [w.strip() for w in keywords.split(",") if w.strip()] if keywords else None
    if keywords is not None and not words:
        raise SteerError("--keywords needs at least one word")
    return load_concept(name, keywords=words, positive=read_set(pos), negative=read_set(neg))


def recipe_of(path: Path, max_new_tokens: int | None, seeds: int):
    """The recipe to evaluate, with ``--max-new-tokens`` applied; several seeds need one
    that samples."""
    from steer.steering.recipe import load_recipe
    from steer.steering.remote import refuse_remote

    recipe = load_recipe(path)
    with about(path):
        refuse_remote(recipe, "steer eval")
    if max_new_tokens is not None:
        gen = recipe.generation.model_copy(update={"max_new_tokens": max_new_tokens})
        recipe = recipe.model_copy(update={"generation": gen})
    if recipe.generation.temperature == 0 and seeds > 1:
        raise SteerError("--seeds > 1 needs a recipe that samples (temperature > 0)")
    return recipe


def evaluate(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="Steering recipe (YAML)."),
    concept: str = typer.Option(..., "--concept", help="The concept the recipe steers toward."),
    keywords: str | None = typer.Option(
        None, "--keywords", help="Comma-separated words of the concept (for one not shipped)."
    ),
    pos: Path | None = texts_option(
        "--pos", "Texts about the concept: one per line, or JSONL text.", required=False
    ),
    neg: Path | None = texts_option(
        "--neg", "Texts not about it: one per line, or JSONL text.", required=False
    ),
    judge: list[str] = typer.Option(
        None, "--judge", help="NAME or NAME:ARG (repeatable; the first picks the strength)."
    ),
    prompts_file: Path | None = texts_option(
        "--prompts", "Prompts, one per line (default: the shipped neutral ones).", required=False
    ),
    strengths: str = typer.Option(
        "0.5,1,1.5", "--strengths", help="Multipliers of the recipe's values."
    ),
    max_ppl_ratio: float = typer.Option(
        2.0, "--max-ppl-ratio", min=1.0, help="Pick only strengths at most this much less fluent."
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per prompt (sampling recipes)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples."),
    kl_windows: int = typer.Option(16, "--kl-windows", min=1, help="64-token windows for KL."),
    mc: Path | None = texts_option(
        "--mc", "Multiple-choice JSONL (question, choices, answer).", required=False
    ),
    max_new_tokens: int | None = typer.Option(
        None,
        "--max-new-tokens",
        "-n",
        min=1,
        help="New tokens per completion (default: the recipe's).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for eval.json, report.html and the resumable arm records."
    ),
    device: str | None = device_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = debug_option(),
) -> None:
    """Evaluate a steering recipe against no steering, prompting and a diff-of-means vector:
    concept score, fluency, capability and speed, with 95 % bootstrap intervals."""
    from steer.evaluation.metrics import read_mc
    from steer.evaluation.run import Settings, make_judges
    from steer.io import check_writable_dir
    from steer.plugins.manager import get_plugin_manager

    if not math.isfinite(max_ppl_ratio):
        raise SteerError(f"--max-ppl-ratio must be a finite number (got {max_ppl_ratio})")
    settings = Settings(
        concept=concept_of(concept, keywords, pos, neg),
        prompts=read_prompts(prompts_file),
        judges=list(judge or ["lexicon"]),
        strengths=parse_strengths(strengths),
        max_ppl_ratio=max_ppl_ratio,
        seeds=seeds,
        bootstrap=bootstrap,
        kl_windows=kl_windows,
        mc_file=str(mc) if mc else None,
    )
    read_mc(settings.mc_file)
    if out is not None:
        check_writable_dir(out, what="--out")
    recipe = recipe_of(recipe_path, max_new_tokens, seeds)
    pm = get_plugin_manager()
    judges = make_judges(pm, settings)  # an unknown or unconfigured judge: before the model
    result = run_evaluation(recipe, recipe_path, settings, judges, pm, out, device, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        from steer.evaluation.report import print_table

        print_table(result, out_console())


def run_evaluation(recipe, recipe_path, settings, judges, pm, out, device, *, quiet: bool):
    """Load the model, run every arm with a progress bar, and write the outputs."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from steer.evaluation.report import write_outputs
    from steer.evaluation.run import Evaluation
    from steer.evaluation.summary import summarise
    from steer.steering.engine import Steerer

    steerer = Steerer(recipe, pm=pm, device=device)
    evaluation = Evaluation(steerer, settings, judges=judges, store_folder=out, pm=pm)
    arms = evaluation.arms()
    stages = 5 + len(settings.judges)  # generate, perplexity, speed, kl, capability, judges
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} stages"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
    )
    records = {}
    with progress:
        task = progress.add_task("eval", total=len(arms) * stages)
        for arm in arms:

            def stage(name: str, what: str) -> None:
                progress.update(task, description=f"{name}: {what}")

            records[arm.name] = evaluation.run_arm(arm, stage)
            progress.update(task, completed=len(records) * stages)
    result = summarise(
        records,
        settings.judges,
        prompts=settings.prompts,
        max_ppl_ratio=settings.max_ppl_ratio,
        resamples=settings.bootstrap,
        meta={
            "recipe": str(recipe_path),
            "concept": settings.concept.name,
            "topic": settings.concept.topic,
            "concept_texts": {
                "positive": len(settings.concept.positive),
                "negative": len(settings.concept.negative),
            },
            "diffmean_norm_per_unit_strength": round(evaluation.norm, 4),
        },
    )
    if out is not None:
        paths = write_outputs(result, out)
        if not quiet:
            err_console.print(f"wrote {paths['json']} and {paths['html']}", highlight=False)
    return result
