"""Benchmark: plain transformers ``generate`` against ``steer`` generation on the bundled model.

Variants, each generating exactly the same number of tokens (min_new_tokens = max_new_tokens):
  plain      transformers generate, no nnsight
  steer-none steer's nnsight generate with no intervention
  steer-clamp one clamped SAE feature at layer 12 on every token (prompt and generated)
at batch 1 and 8. Prints tokens/s and the ratio of each variant's time to plain (lower is
better; the target for steer-clamp is <= 1.10 on CPU). Run alone on the machine: another
process using the cores makes every number meaningless.

    python bench/generation.py [--tokens 40] [--reps 5] [--batches 1 8] [--sae PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steer.model import load_model
from steer.sae.sources import builtin_saes
from steer.steering.engine import Steerer
from steer.steering.generation import generate_plain
from steer.steering.recipe import parse_recipe

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis to a child.",
    "Give me three tips for learning to cook.",
    "Why is the sky blue?",
    "Describe a walk in the forest in autumn.",
    "What makes a good friend?",
    "Summarize the plot of Hamlet in two sentences.",
]


def default_sae(tmp: Path, d_model: int) -> Path:
    """The shipped layer-12 SAE if there is one, else a random one of the same size (the
    cost of an edit does not depend on what the features mean)."""
    shipped = builtin_saes()
    if shipped:
        return next(iter(shipped.values()))
    from steer.sae import SAEConfig, get_architectures, save_sae

    cfg = SAEConfig(
        architecture="topk",
        d_in=d_model,
        d_sae=8 * d_model,
        k=32,
        hf_hook_name="model.layers.12",
        hook_name="blocks.12.hook_resid_post",
    )
    sae = get_architectures()["topk"](cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.05)
    save_sae(sae, tmp / "random-sae")
    return tmp / "random-sae"


def time_interleaved(variants: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each variant over ``reps`` runs, after one warm-up run each. Runs are
    interleaved (a, b, c, a, b, c, ...), so a drift in machine speed hits every variant alike."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--sae", type=Path, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    model = load_model(device=args.device)
    tmp = Path(tempfile.mkdtemp())
    sae_path = args.sae or default_sae(tmp, model.d_model)
    gen = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    print(
        f"device={model.device} threads={torch.get_num_threads()} sae={sae_path} tokens={args.tokens}"
    )
    print(f"{'batch':>5} {'variant':<12} {'median s':>9} {'tok/s':>8} {'ratio':>6}")
    for batch in args.batches:
        prompts = (PROMPTS * batch)[:batch]
        base = {"prompts": prompts, "generation": {**gen, "batch_size": batch}}
        none = Steerer(parse_recipe(base), model=model)
        clamp = Steerer(
            parse_recipe(
                {
                    **base,
                    "saes": [{"id": "res12", "path": str(sae_path), "layer": 12}],
                    "interventions": [
                        {"plugin": "clamp", "sae": "res12", "features": [7], "value": 10.0}
                    ],
                }
            ),
            model=model,
        )
        enc = model.tokenize(prompts, chat=None)
        variants = {
            "plain": lambda enc=enc, r=none.recipe: generate_plain(model, enc, r),
            "steer-none": lambda s=none: s.run(baseline=False),
            "steer-clamp": lambda s=clamp: s.run(baseline=False),
        }
        medians = time_interleaved(variants, args.reps)
        for name, med in medians.items():
            print(
                f"{batch:>5} {name:<12} {med:>9.3f} {batch * args.tokens / med:>8.1f} "
                f"{med / medians['plain']:>6.3f}"
            )


if __name__ == "__main__":
    main()
