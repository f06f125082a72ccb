"""Benchmark: what watching 32 SAE features during generation costs, against plain
transformers ``generate`` on the bundled model.

Variants, each generating exactly the same number of tokens (min_new_tokens = max_new_tokens):
  plain         transformers generate, no nnsight
  steer-none    steer's nnsight generate with nothing attached
  monitor-32    three monitor groups, 32 features of the shipped SAE in all (the two safety
                groups of recipes/monitor-*.yaml and labelled features), action `log`, events
                reported live; the TopK SAE is screened with the watched encoder columns only
  monitor-full  the same with the screen turned off: the full 8,192-feature encode per token
at batch 1 and 8. Prints tokens/s, events per run and each variant's time over plain (the
target for monitor-32 is <= 1.05 on CPU). Run alone on the machine.

    python bench/monitor_cost.py [--tokens 40] [--reps 5] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from generation import PROMPTS, default_sae, time_interleaved

from steer.model import load_model
from steer.sae.labels import load_labels
from steer.steering.engine import Steerer
from steer.steering.generation import generate_plain
from steer.steering.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parent.parent


def watch_groups(sae_path: Path, n: int = 32) -> list[dict]:
    """The safety groups of the shipped recipes, plus labelled features up to ``n`` in all."""
    groups, taken = [], set()
    for name in ("monitor-toxicity", "monitor-harmful-requests"):
        spec = load_recipe(ROOT / "recipes" / f"{name}.yaml").monitors[0]
        groups.append(
            {"name": spec.name, "features": list(spec.features), "threshold": spec.threshold}
        )
        taken |= set(spec.features)
    labelled = [f for f in sorted(load_labels(sae_path)) if f not in taken]
    groups.append({"name": "labelled", "features": labelled[: n - len(taken)], "threshold": 8.0})
    assert sum(len(g["features"]) for g in groups) == n, "not enough labelled features"
    return [{**g, "sae": "res12"} for g in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    model = load_model(device="cpu")
    sae_path = default_sae(Path(tempfile.mkdtemp()), model.d_model)
    monitors = watch_groups(sae_path)
    gen = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    events: dict[str, int] = {}  # events per run of each monitored variant
    print(f"threads={torch.get_num_threads()} sae={sae_path.name} tokens={args.tokens}")
    print(f"{'batch':>5} {'variant':<13} {'median s':>9} {'tok/s':>8} {'events':>7} {'ratio':>6}")
    for batch in args.batches:
        prompts = (PROMPTS * batch)[:batch]
        base = {"prompts": prompts, "generation": {**gen, "batch_size": batch}}
        watched = {
            **base,
            "saes": [{"id": "res12", "path": str(sae_path)}],
            "monitors": monitors,
        }
        none = Steerer(parse_recipe(base), model=model)
        monitor = Steerer(parse_recipe(watched), model=model)
        full = Steerer(parse_recipe(watched), model=model)
        # No bound: every watched read runs the full encode, as before the screen existed.
        full.saes["res12"][0].activation_bound_columns = lambda pre, idx: None
        enc = model.tokenize(prompts, chat=None)
        events.clear()

        def counted(name, steerer):
            def run():
                results = steerer.run(baseline=False)
                events[name] = sum(len(r.events) for r in results.results)

            return run

        variants = {
            "plain": lambda enc=enc, r=none.recipe: generate_plain(model, enc, r),
            "steer-none": lambda s=none: s.run(baseline=False),
            "monitor-32": counted("monitor-32", monitor),
            "monitor-full": counted("monitor-full", full),
        }
        medians = time_interleaved(variants, args.reps)
        for name, med in medians.items():
            print(
                f"{batch:>5} {name:<13} {med:>9.3f} {batch * args.tokens / med:>8.1f} "
                f"{events.get(name, '')!s:>7} {med / medians['plain']:>6.3f}"
            )


if __name__ == "__main__":
    main()
