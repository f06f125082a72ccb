"""Does steering by label visibly work? Baseline vs steered completions of neutral prompts.

For each ``recipes/steer-<concept>.yaml`` (an ``add`` intervention on a feature named by its
label): run the recipe's intervention over the neutral PROMPTS below (40 new tokens, greedy,
batch 8) and report

* mentions: the share of completions that use a word of the concept's KEYWORDS list, for the
  unsteered model (baseline) and the steered one;
* fluency: the mean per-token loss of the completions under the UNSTEERED model, given the
  prompt; ``ppl ratio`` = exp(steered loss - baseline loss) (1.0 = as fluent as the model's
  own text; higher = less likely text).

``--values`` sweeps the intervention's value (the recipe's own value is always included).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/steer_by_label.py \
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

ROOT = Path(__file__).resolve().parent.parent

# Everyday requests with no built-in topic or tone.
PROMPTS = [
    "Tell me about your weekend.",
    "Write a short story about a man who finds a key.",
    "What should I do this afternoon?",
    "Describe your favourite place.",
    "Give me some advice for a job interview.",
    "Write a few sentences about a city at night.",
    "What is a good way to start the day?",
    "Tell me about a memorable trip.",
    "Write a letter to a friend you have not seen in years.",
    "Describe an old house.",
    "What makes a good teacher?",
    "Write the opening of a mystery novel.",
    "Tell me something interesting.",
    "Describe a busy market.",
    "How do I make new friends in a new town?",
    "Write a short poem about the morning.",
    "What did people do before the internet?",
    "Describe the view from a window.",
    "Tell me a story about two brothers.",
    "What is the best way to learn a new skill?",
    "Write a diary entry for a rainy Tuesday.",
    "Describe a walk in the afternoon.",
    "Tell me about a famous painting.",
    "What would you take on a long journey?",
]

# Words that count as mentioning each concept (whole words, case-insensitive).
KEYWORDS = {
    "sea": [
        "sea",
        "seas",
        "ocean",
        "oceans",
        "oceanic",
        "marine",
        "wave",
        "waves",
        "tide",
        "tides",
        "beach",
        "beaches",
        "shore",
        "coast",
        "coastal",
        "seaside",
        "sailor",
        "sailors",
        "ship",
        "ships",
        "boat",
        "boats",
        "sail",
        "sailing",
        "harbor",
        "harbour",
        "fish",
        "whale",
        "whales",
        "island",
        "islands",
        "seashore",
        "saltwater",
        "underwater",
        "maritime",
    ],
    "praise": [
        "wonderful",
        "beautiful",
        "amazing",
        "brilliant",
        "excellent",
        "magnificent",
        "superb",
        "delightful",
        "fantastic",
        "terrific",
        "marvelous",
        "marvellous",
        "gorgeous",
        "lovely",
        "stunning",
        "incredible",
        "glorious",
        "splendid",
        "breathtaking",
        "perfect",
        "remarkable",
        "extraordinary",
        "exquisite",
        "enchanting",
    ],
    "sadness": [
        "sad",
        "sadly",
        "sadness",
        "sorrow",
        "sorrowful",
        "grief",
        "grieve",
        "grieving",
        "tears",
        "tear",
        "cry",
        "cried",
        "crying",
        "weep",
        "wept",
        "mourn",
        "mourning",
        "melancholy",
        "heartbroken",
        "heartbreak",
        "lonely",
        "loneliness",
        "despair",
        "unhappy",
        "gloomy",
        "miserable",
        "depressed",
        "tragic",
        "tragedy",
        "loss",
    ],
    "excellence": [
        "excellent",
        "excellence",
        "wonderful",
        "important",
        "extraordinary",
        "remarkable",
        "outstanding",
        "exceptional",
        "superb",
        "magnificent",
        "brilliant",
        "great",
        "greatest",
        "key",
        "crucial",
        "vital",
        "essential",
        "significant",
        "impressive",
        "amazing",
        "incredible",
        "fantastic",
        "perfect",
    ],
    "horror": [
        "horror",
        "horrors",
        "horrific",
        "horrifying",
        "terror",
        "terrifying",
        "terrified",
        "scary",
        "scared",
        "fear",
        "fears",
        "frightening",
        "frightened",
        "monster",
        "monsters",
        "ghost",
        "ghosts",
        "haunted",
        "creepy",
        "nightmare",
        "nightmares",
        "dread",
        "eerie",
        "sinister",
        "blood",
        "bloody",
        "scream",
        "screamed",
        "screams",
        "zombie",
        "zombies",
    ],
    "romance": [
        "love",
        "loved",
        "loves",
        "lover",
        "lovers",
        "romance",
        "romantic",
        "kiss",
        "kissed",
        "heart",
        "hearts",
        "date",
        "dating",
        "girlfriend",
        "boyfriend",
        "passion",
        "passionate",
        "beloved",
        "sweetheart",
        "darling",
        "valentine",
        "wedding",
        "marry",
        "married",
    ],
    "storms": [
        "storm",
        "storms",
        "stormy",
        "hurricane",
        "hurricanes",
        "tornado",
        "tornadoes",
        "flood",
        "floods",
        "flooding",
        "thunder",
        "thunderstorm",
        "lightning",
        "rain",
        "wind",
        "winds",
        "earthquake",
        "disaster",
        "disasters",
        "cyclone",
        "typhoon",
        "gale",
        "blizzard",
    ],
    "food": [
        "food",
        "foods",
        "cook",
        "cooking",
        "cooked",
        "dinner",
        "lunch",
        "breakfast",
        "meal",
        "meals",
        "eat",
        "eating",
        "ate",
        "delicious",
        "recipe",
        "recipes",
        "bread",
        "soup",
        "cheese",
        "pasta",
        "sauce",
        "chicken",
        "vegetables",
        "fruit",
        "kitchen",
        "bake",
        "baking",
        "dish",
        "dishes",
        "restaurant",
        "flavor",
        "flavour",
        "taste",
        "coffee",
    ],
    "royalty": [
        "king",
        "kings",
        "queen",
        "queens",
        "royal",
        "royalty",
        "prince",
        "princess",
        "crown",
        "throne",
        "kingdom",
        "monarch",
        "monarchy",
        "palace",
        "duke",
        "emperor",
        "empress",
        "majesty",
        "reign",
        "castle",
    ],
}


def mentions(text: str, words: list[str]) -> bool:
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def completion_losses(lm, prompts: list[str], completions: list[str], chat) -> tuple[float, int]:
    """Summed per-token loss of each completion given its prompt under the plain model, and
    the number of completion tokens."""
    tok = lm.tokenizer
    use_chat = lm.has_chat_template if chat is None else chat
    total, count = 0.0, 0
    for prompt, text in zip(prompts, completions, strict=True):
        p_ids = tok(lm.format_prompt(prompt, chat), add_special_tokens=not use_chat)["input_ids"]
        c_ids = tok(text, add_special_tokens=False)["input_ids"]
        if not c_ids:
            continue
        ids = torch.tensor([p_ids + c_ids], device=lm.device)
        with torch.inference_mode():
            logits = lm.hf(input_ids=ids).logits[0, len(p_ids) - 1 : -1].float()
        total += float(
            torch.nn.functional.cross_entropy(logits, ids[0, len(p_ids) :], reduction="sum")
        )
        count += len(c_ids)
    return total, count


def with_value(recipe, value: float):
    steps = [s.model_copy(update={"value": value}) for s in recipe.interventions]
    return recipe.model_copy(update={"interventions": steps})


def main() -> None:
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
    args = ap.parse_args()
    torch.set_num_threads(1)

    from steer.model import load_model
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
        recipe = load_recipe(ROOT / path if not Path(path).is_absolute() else path)
        gen = recipe.generation.model_copy(
            update={"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "batch_size": 8}
        )
        recipe = recipe.model_copy(
            update={"generation": gen, "prompts": [PromptSpec(text=p) for p in prompts]}
        )
        own = recipe.interventions[0].value
        values = sorted({*sweep, own})
        if baseline is None:  # the same for every recipe: greedy, same prompts and settings
            run = Steerer(with_value(recipe, 0.0), model=lm).run(baseline=True)
            baseline = [r.baseline for r in run.results]
            b_loss, b_tokens = completion_losses(lm, prompts, baseline, gen.chat)
            result["baseline_loss"] = b_loss / b_tokens
        base_rate = sum(mentions(t, words) for t in baseline) / len(prompts)
        rows = []
        for value in values:
            steerer = Steerer(with_value(recipe, value), model=lm)
            steered = [r.steered for r in steerer.run(baseline=False).results]
            s_loss, s_tokens = completion_losses(lm, prompts, steered, gen.chat)
            rate = sum(mentions(t, words) for t in steered) / len(prompts)
            loss = s_loss / max(s_tokens, 1)
            rows.append(
                {
                    "value": value,
                    "recipe_value": value == own,
                    "mention_rate": round(rate, 3),
                    "loss": round(loss, 3),
                    "ppl_ratio": round(math.exp(loss - result["baseline_loss"]), 2),
                    "mean_tokens": round(s_tokens / len(prompts), 1),
                    "examples": [
                        {"prompt": p, "baseline": b, "steered": s}
                        for p, b, s in list(zip(prompts, baseline, steered, strict=True))[
                            : args.show
                        ]
                    ],
                }
            )
        feature = steerer.recipe.interventions[0].features[0]
        label = recipe.interventions[0].features[0]
        result["concepts"][concept] = {
            "recipe": path,
            "label": label,
            "feature": feature,
            "baseline_mention_rate": round(base_rate, 3),
            "sweep": rows,
        }
        print(f"\n{concept}: label {label!r} = feature {feature}; keywords: {len(words)} words")
        print(f"baseline mentions {base_rate:.0%} (loss {result['baseline_loss']:.3f})")
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
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\ntotal {result['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
