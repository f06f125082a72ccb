"""Pinpoint SmolLM2's gender-stereotyped pronoun preference with the shipped SAE, against neurons.

Runs recipes/pinpoint-gender.yaml (Winogender prefixes; metric: logit of the pronoun the
occupation's stereotype predicts minus the other, " he"/" she"; attribution patching, zero
ablation) and prints, for SAE features and for the residual stream's basis directions at the
same layer:

* how many must be ablated (top-ranked first) to remove 50 % of the mean logit difference;
* the extra next-token loss on unrelated text (wikitext-2 test, ~4k tokens) with them ablated;
* the correlation of attribution and verified single-node effect over the top 50;
* transfer: the same ablation on gendered prompts the tool did not see
  (``experiments/data/gender_transfer.yaml``, written for this study), against as many
  randomly chosen nodes.

Usage (about 6 minutes of CPU time on one thread; 7-12 minutes wall on a shared machine):

    OMP_NUM_THREADS=1 python experiments/pinpoint_gender.py [--out DIR] [--prompts N]

``--sae`` (repeatable: a folder or a shipped name) replaces the recipe's SAEs, one site each,
e.g. the layer 6/12/18/24 family; steer pinpoint ranks each site in its own pass (no joint
multi-layer ranking), and the tables are printed per site. ``--side-effect-data`` replaces
the recipe's unrelated text (docs/pinpoint.md's loss numbers used the whole WikiText-2 test
split, ``$STEER_CORPUS/wikitext2_raw_test.txt``); ``--baselines pca,ica`` adds those bases.

Writes pinpoint.json, transfer.json (per SAE id), curve.png and curve.html to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import REPO, load_data

from steer.io import atomic_write_text
from steer.pinpoint import Pinpointer, load_pinpoint_recipe
from steer.pinpoint.ablation import ablated_metrics_per_prompt, clean_metric
from steer.pinpoint.metric import resolve_metric
from steer.pinpoint.nodes import (
    FeatureBasis,
    NeuronBasis,
    build_nodes,
    clean_layer_run,
    make_buckets,
)
from steer.pinpoint.recipe import PinpointPrompt
from steer.pinpoint.report import write_outputs
from steer.steering.recipe import SAESpec

# Gendered prompts the tool did not see: (text, the pronoun its stereotype predicts).
TRANSFER = [(p["text"], p["target"]) for p in load_data("gender_transfer.yaml")]
RANDOM_DRAWS = 5


def transfer(pinpointer: Pinpointer, site: dict, seed: int = 0) -> dict:
    """Ablate each basis's pinpointed set on TRANSFER; compare with random sets of that size."""
    model, recipe = pinpointer.model, pinpointer.recipe
    sae, layer = pinpointer.saes[site["sae"]]
    other = {" he": " she", " she": " he"}
    prompts = [PinpointPrompt(text=t, target=p, foil=other[p]) for t, p in TRANSFER]
    metric = resolve_metric(
        recipe.model_copy(update={"prompts": prompts}), model.tokenizer, model=recipe.model
    )
    texts = [t for t, _ in TRANSFER]
    buckets = make_buckets(model, texts, None, chat=recipe.chat, batch_size=32)
    run = clean_layer_run(model, layer, buckets)
    out = {}
    gen = torch.Generator().manual_seed(seed)
    for basis in (FeatureBasis(sae), NeuronBasis(model.d_model)):
        part = site.get(basis.kind)
        if part is None:
            continue
        nodes = build_nodes(basis, run, recipe.ablation)
        clean = clean_metric(buckets, nodes, metric)
        n = part["n_for_half"] or len(part["ranked"])
        chosen = torch.tensor(part["order"][:n])
        randoms = [
            torch.randperm(basis.n, generator=gen)[: len(chosen)] for _ in range(RANDOM_DRAWS)
        ]
        per_prompt = ablated_metrics_per_prompt(model, buckets, nodes, metric, [chosen, *randoms])
        change = per_prompt[0] - clean
        out[basis.kind] = {
            "n_ablated": len(chosen),
            "clean_mean": float(clean.mean()),
            "ablated_mean": float(per_prompt[0].mean()),
            "fraction_removed": float((clean.mean() - per_prompt[0].mean()) / clean.mean()),
            "prompts_lowered": int((change < 0).sum()),
            "random_ablated_mean": float(per_prompt[1:].mean()),
            "per_prompt": [
                {"prompt": p, "clean": float(c), "ablated": float(a)}
                for p, c, a in zip(texts, clean, per_prompt[0], strict=True)
            ],
        }
    return out


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "pinpoint-gender.yaml"))
    parser.add_argument("--out", default="/tmp/pinpoint-gender")
    parser.add_argument("--prompts", type=int, default=None, help="Use only the first N prompts.")
    parser.add_argument("--method", default=None, help="Override the recipe's attribution method.")
    parser.add_argument("--steps", type=int, default=None, help="Integrated-gradients steps.")
    parser.add_argument("--no-neurons", action="store_true", help="Skip the neuron baseline.")
    parser.add_argument(
        "--sae",
        action="append",
        default=None,
        metavar="FOLDER_OR_NAME",
        help="Pinpoint this SAE instead of the recipe's (repeat for several layers; id: the "
        "folder's parent name, e.g. L6 for /work/family/L6/sae).",
    )
    parser.add_argument(
        "--side-effect-data", default=None, help="Unrelated text for the loss check (a file)."
    )
    parser.add_argument(
        "--baselines", default=None, help="Also pinpoint these linear bases: pca, ica or pca,ica."
    )
    return parser.parse_args()


def sae_specs(names: list[str]) -> list[SAESpec]:
    """One SAE spec per ``--sae``: an existing folder by path, anything else a shipped name;
    ids from the folder (``L6`` for ``.../L6/sae``) or the name, made unique."""
    specs: list[SAESpec] = []
    for name in names:
        path = Path(name).expanduser()
        if path.is_dir():
            base = path.resolve()
            sid = base.parent.name if base.name == "sae" else base.name
            spec = {"path": str(base)}
        else:
            sid, spec = name, {"builtin": name}
        taken = {s.id for s in specs}
        sid = sid if sid not in taken else f"{sid}-{len(specs)}"
        specs.append(SAESpec(id=sid, **spec))
    return specs


def adjusted_recipe(args: argparse.Namespace):
    """The recipe with this command line's overrides."""
    recipe = load_pinpoint_recipe(args.recipe)
    update: dict = {}
    if args.prompts:
        update["prompts"] = recipe.prompts[: args.prompts]
    if args.method:
        update["method"] = args.method
    if args.steps:
        update["steps"] = args.steps
    if args.no_neurons:
        update["neuron_baseline"] = False
    if args.sae:
        update["saes"] = sae_specs(args.sae)
    if args.side_effect_data:
        update["side_effect_data"] = str(Path(args.side_effect_data).resolve())
    if args.baselines:
        update["baselines"] = [b.strip() for b in args.baselines.split(",") if b.strip()]
    # Validate the changed recipe again (bad baselines, duplicate ids) before anything loads.
    return type(recipe).model_validate({**recipe.model_dump(), **update})


def main() -> None:
    args = parse_args()

    t0 = time.perf_counter()
    recipe = adjusted_recipe(args)
    pinpointer = Pinpointer(recipe)
    result = pinpointer.run(progress=True).to_dict()
    moved = {site["sae"]: transfer(pinpointer, site) for site in result["sites"]}
    elapsed = time.perf_counter() - t0

    out = Path(args.out)
    write_outputs(result, out)
    atomic_write_text(out / "transfer.json", json.dumps(moved, indent=2) + "\n")
    print_summary(recipe, result, moved, elapsed, out)


def _half(p: dict) -> str:
    return str(p["n_for_half"]) if p["n_for_half"] else f"> {p['curve'][-1]['n']}"


def _at_n(p: dict, n: int) -> str:
    pts = [q for q in p["curve"] if q["n"] == n]
    return f"{pts[0]['metric']:.3f}" if pts else "-"


def _side_effect(p: dict, which: str) -> str:
    rows = {s["n"]: s for s in p.get("side_effects", [])}
    n = p["n_for_half"] if which == "half" else len(p["ranked"])
    return f"{rows[n]['delta']:+.4f} (n={n})" if n in rows else "-"


def _corr(p: dict) -> str:
    c = p["correlation"]
    if c["pearson"] is None:
        return f"- (n={c['n']})"
    return f"{c['pearson']:.3f} / {c['spearman']:.3f} (n={c['n']})"


def _error(p: dict) -> str:
    return f"{p['error_attribution']:+.3f}" if p["error_attribution"] is not None else "-"


ROWS = [
    ("ablated to remove 50 % of the logit diff", _half),
    ("metric with top 10 ablated", lambda p: _at_n(p, 10)),
    ("metric with top 50 ablated", lambda p: _at_n(p, 50)),
    ("extra loss on wikitext, 50 % set", lambda p: _side_effect(p, "half")),
    ("extra loss on wikitext, top-k set", lambda p: _side_effect(p, "top")),
    ("attribution vs verified, top 50: pearson / spearman", _corr),
    ("error node attribution", _error),
]


def print_summary(recipe, result: dict, moved: dict, elapsed: float, out: Path) -> None:
    """The markdown tables of docs/pinpoint.md for every site: SAE features against neurons
    (and PCA/ICA when asked), then transfer; with several sites, one table of them all."""
    from steer.pinpoint.report import KINDS
    from steer.sae import read_sae_config
    from steer.sae.sources import resolve_sae_path

    print(
        f"{result['n_prompts']} prompts; {result['metric']}; clean mean "
        f"{result['clean_metric']:.3f}; method {result['method']}, ablation {result['ablation']}"
    )
    for spec, site in zip(recipe.saes, result["sites"], strict=True):
        cfg = read_sae_config(resolve_sae_path(spec, where=spec.id))
        kinds = [k for k in KINDS if k in site]
        print(
            f"\n## {spec.id}: SAE {spec.builtin or spec.path}: d_sae={cfg.d_sae} k={cfg.k} "
            f"layer={site['layer']}\n"
        )
        print("| | " + " | ".join(f"{k} ({site[k]['n_nodes']})" for k in kinds) + " |")
        print("|---|" + "---|" * len(kinds))
        for name, fn in ROWS:
            print(f"| {name} | " + " | ".join(fn(site[k]) for k in kinds) + " |")
        print(
            f"\nclean loss on wikitext: {site.get('ce_clean', float('nan')):.4f} "
            f"({site.get('side_effect_tokens', 0)} predicted tokens)"
        )
        print_transfer(moved[spec.id])
    if len(result["sites"]) > 1:
        print_joint(result)
    print(
        f"\ntiming: {json.dumps({k: round(v, 1) for k, v in result['timing'].items()})}, "
        f"total {elapsed:.0f} s; outputs in {out}"
    )


def print_transfer(moved: dict) -> None:
    """One site's transfer table."""
    print(
        "\nTransfer to unseen prompts (same ablated sets; random: mean of "
        f"{RANDOM_DRAWS} random sets of the same size):\n"
    )
    print("| | n ablated | clean mean | ablated mean | removed | prompts lowered | random sets |")
    print("|---|---|---|---|---|---|---|")
    for kind, t in moved.items():
        print(
            f"| {kind} | {t['n_ablated']} | {t['clean_mean']:.3f} | {t['ablated_mean']:.3f} | "
            f"{t['fraction_removed']:.0%} | {t['prompts_lowered']}/{len(TRANSFER)} | "
            f"{t['random_ablated_mean']:.3f} |"
        )


def print_joint(result: dict) -> None:
    """Every site side by side: features and neurons of each."""
    cols = [(s["sae"], k, s[k]) for s in result["sites"] for k in ("features", "neurons") if k in s]
    print("\n## All sites\n")
    print("| | " + " | ".join(f"{sid} {k}" for sid, k, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, fn in ROWS:
        print(f"| {name} | " + " | ".join(fn(p) for _, _, p in cols) + " |")


if __name__ == "__main__":
    main()
