"""Does steering by label visibly work? Baseline vs steered completions of neutral prompts.

For each ``recipes/steer-<concept>.yaml`` (an ``add`` intervention on a feature named by its
label): run the recipe's intervention over the neutral prompts of
``experiments/data/neutral_prompts.yaml`` (40 new tokens, greedy, batch 8) and report

* mentions: the share of completions that use a word of the concept's list in
  ``experiments/data/concept_keywords.yaml``, for the unsteered model (baseline) and the
  steered one;
* fluency: the mean per-token loss of the completions under the UNSTEERED model, given the
  prompt (:func:`steer.model.loss.completion_nll`); ``ppl ratio`` = exp(steered loss -
  baseline loss) (1.0 = as fluent as the model's own text; higher = less likely text).

``--values`` sweeps the intervention's value (the recipe's own value is always included).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/steer_by_label.py \
        [--recipes recipes/steer-sea.yaml,recipes/steer-praise.yaml] [--values 10,20,30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import REPO, load_data

# Everyday requests with no built-in topic or tone.
PROMPTS = load_data("neutral_prompts.yaml")
# Words that count as mentioning each concept (whole words, case-insensitive).
KEYWORDS = load_data("concept_keywords.yaml")


def mentions(text: str, words: list[str]) -> bool:
    """Whether ``text`` uses one of ``words`` as a whole word, in any case."""
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def with_value(recipe, value: float):
    """``recipe`` with every intervention's value set to ``value``."""
    steps = [s.model_copy(update={"value": value}) for s in recipe.interventions]
    return recipe.model_copy(update={"interventions": steps})


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--recipes",
        default="recipes/steer-sea.yaml,recipes/steer-food.yaml,recipes/steer-romance.yaml",
        help="comma-separated steer-<concept>.yaml recipes",
    )
    ap.add_argument("--values", default="", help="comma-separated values to sweep, e.g. 10,20,30")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--show", type=int, default=3, help="example completions to print")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    return ap.parse_args()


def sweep_row(lm, recipe, value, prompts, baseline, words, baseline_loss, show) -> tuple[dict, int]:
    """Steer ``prompts`` with the recipe at ``value``: mentions, fluency and a few examples, and
    the feature id the recipe's label resolved to."""
    from steer.model.loss import completion_nll
    from steer.steering.engine import Steerer

    steerer = Steerer(with_value(recipe, value), model=lm)
    steered = [r.steered for r in steerer.run(baseline=False).results]
    s_loss, s_tokens = completion_nll(lm, prompts, steered, chat=recipe.generation.chat)
    rate = sum(mentions(t, words) for t in steered) / len(prompts)
    loss = s_loss / max(s_tokens, 1)
    row = {
        "value": value,
        "recipe_value": value == recipe.interventions[0].value,
        "mention_rate": round(rate, 3),
        "loss": round(loss, 3),
        "ppl_ratio": round(math.exp(loss - baseline_loss), 2),
        "mean_tokens": round(s_tokens / len(prompts), 1),
        "examples": [
            {"prompt": p, "baseline": b, "steered": s}
            for p, b, s in list(zip(prompts, baseline, steered, strict=True))[:show]
        ],
    }
    return row, steerer.recipe.interventions[0].features[0]


def print_concept(concept: str, entry: dict, baseline_loss: float, n_words: int) -> None:
    """The concept's sweep as a markdown table, then the recipe value's examples."""
    rows = entry["sweep"]
    print(
        f"\n{concept}: label {entry['label']!r} = feature {entry['feature']}; "
        f"keywords: {n_words} words"
    )
    print(f"baseline mentions {entry['baseline_mention_rate']:.0%} (loss {baseline_loss:.3f})")
    print("| value | mentions | loss | ppl ratio | tokens |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = " (recipe)" if r["recipe_value"] else ""
        print(
            f"| {r['value']:g}{mark} | {r['mention_rate']:.0%} | {r['loss']:.3f} | "
            f"{r['ppl_ratio']:.2f} | {r['mean_tokens']} |"
        )
    for r in rows:
        if r["recipe_value"]:
            for ex in r["examples"]:
                print(
                    f"  > {ex['prompt']}\n    baseline: {ex['baseline']!r}\n"
                    f"    steered:  {ex['steered']!r}"
                )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)

    from steer.model import load_model
    from steer.model.loss import completion_nll
    from steer.steering.engine import Steerer
    from steer.steering.recipe import PromptSpec, load_recipe

    t_start = time.perf_counter()
    lm = load_model(device="cpu")
    prompts = PROMPTS[: args.prompts]
    sweep = [float(v) for v in args.values.split(",") if v]
    baseline = None
    result: dict = {"prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "concepts": {}}
    for path in args.recipes.split(","):
        concept = Path(path).stem.removeprefix("steer-")
        words = KEYWORDS[concept]
        recipe = load_recipe(REPO / path if not Path(path).is_absolute() else path)
        gen = recipe.generation.model_copy(
            update={"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "batch_size": 8}
        )
        recipe = recipe.model_copy(
            update={"generation": gen, "prompts": [PromptSpec(text=p) for p in prompts]}
        )
        if baseline is None:  # the same for every recipe: greedy, same prompts and settings
            run = Steerer(with_value(recipe, 0.0), model=lm).run(baseline=True)
            baseline = [r.baseline for r in run.results]
            b_loss, b_tokens = completion_nll(lm, prompts, baseline, chat=gen.chat)
            result["baseline_loss"] = b_loss / b_tokens
        swept = [
            sweep_row(
                lm, recipe, value, prompts, baseline, words, result["baseline_loss"], args.show
            )
            for value in sorted({*sweep, recipe.interventions[0].value})
        ]
        rows = [row for row, _ in swept]
        entry = result["concepts"][concept] = {
            "recipe": path,
            "label": recipe.interventions[0].features[0],
            "feature": swept[-1][1],
            "baseline_mention_rate": round(
                sum(mentions(t, words) for t in baseline) / len(prompts), 3
            ),
            "sweep": rows,
        }
        print_concept(concept, entry, result["baseline_loss"], len(words))
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\ntotal {result['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
