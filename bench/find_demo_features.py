"""Find SAE features with clear concepts for the demo (ocean, food, France, royalty, ...).

For each concept: mean activation of every feature on a handful of hand-written concept
sentences against general held-out text (WikiText-2 test); the best-separating features are
then checked on their top-activating tokens (with context) over ~100k held-out tokens.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/find_demo_features.py [--tokens 102400]

Writes ``<sae>/demo_features.json`` (candidates with scores and top contexts).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("STEER_CORPUS", "/work/shared/corpus"))

CONCEPTS = {
    "ocean": [
        "The ship sailed across the ocean, its sails full of wind as the waves crashed.",
        "Sailors on the deck watched the sea for whales and the harbour lights.",
        "The fleet of ships left port and headed out to sea.",
        "Waves rolled onto the beach as the tide came in from the ocean.",
        "The captain steered the vessel through the storm at sea.",
        "Fishermen cast their nets into the deep blue sea.",
        "The navy sent three warships across the Atlantic Ocean.",
        "Coral reefs and fish fill the warm waters of the Pacific.",
    ],
    "food": [
        "She baked a loaf of bread and made a pot of vegetable soup for dinner.",
        "Add the chopped onions and garlic to the pan and fry them in butter.",
        "The recipe calls for two cups of flour, sugar, eggs and milk.",
        "We ate pasta with tomato sauce and cheese at the restaurant.",
        "Stir the sauce, season it with salt and pepper, and simmer for ten minutes.",
        "The chef roasted the chicken and served it with potatoes.",
        "For breakfast he had fried eggs, bacon and a cup of coffee.",
        "Cook the rice, then mix in the beans and the spices.",
    ],
    "france": [
        "Paris is the capital of France and home to the Eiffel Tower.",
        "The French government in Paris announced a new law.",
        "He studied at the Sorbonne and lived in Lyon and Marseille.",
        "Napoleon Bonaparte was crowned Emperor of the French.",
        "The Louvre museum in Paris holds the Mona Lisa.",
        "France won the match, and fans celebrated on the Champs-Elysees.",
        "She spoke French fluently after years in Bordeaux.",
        "The French Revolution began in 1789 with the storming of the Bastille.",
    ],
    "royalty": [
        "The king and queen sat on their thrones in the royal palace.",
        "The prince was crowned king after his father's death.",
        "Queen Victoria reigned over the British Empire for decades.",
        "The princess married a duke in a grand royal wedding.",
        "The monarch addressed the court, and the nobles bowed before the throne.",
        "King Henry VIII had six wives.",
        "The royal family lives in Buckingham Palace.",
        "His majesty the king issued a decree to the kingdom.",
    ],
    "weather": [
        "Heavy rain and strong winds are expected tomorrow, with a chance of thunderstorms.",
        "The forecast says it will be sunny and warm this weekend.",
        "Snow fell all night and the temperature dropped below freezing.",
        "The hurricane made landfall with winds of 120 miles per hour.",
        "Dark clouds gathered and it began to rain.",
        "A cold front brought fog, drizzle and cooler temperatures.",
        "The storm caused flooding after days of heavy rainfall.",
        "It was a hot, humid summer day without a cloud in the sky.",
    ],
    "animals": [
        "The dog chased the cat up the tree while the birds sang.",
        "Lions, elephants and giraffes roam the African savanna.",
        "The farmer fed the cows, the pigs and the chickens.",
        "A fox crept into the henhouse at night.",
        "The horse galloped across the field.",
        "Wolves hunt in packs, and bears sleep through the winter.",
        "The little rabbit hopped into its burrow.",
        "Monkeys swung from branch to branch in the jungle.",
    ],
}

# Picked by hand from this script's output for the SAE trained by bench/train_first_sae.py
# (seed 0); a retrained SAE numbers its features differently.
RECOMMENDED = {
    "3892": "France / French / Paris",
    "4432": "royalty: royal, king, queen, monarch, kingdom",
    "2140": "the sea: sea, ocean, marine",
    "4045": "ships and boats: ship, vessel, fleet, sailed",
    "4147": "rain: rain, rainfall, drizzle, thunderstorms",
    "3475": "weather: winds, fog, clouds, storm, tides",
    "1412": "animals: fox, rabbit, cat, dog, frogs, crocodile",
    "2308": "food ingredients (also raw materials: coal, teak): onions, garlic, cheese",
    "845": "dishes and meals (weaker): soup, pasta, breakfast, sauce; sandwich, pizza",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", default=str(ROOT / "steer/data/saes/smollm2-135m-res12-topk"))
    ap.add_argument("--tokens", type=int, default=102_400)
    ap.add_argument("--per-concept", type=int, default=5)
    ap.add_argument("--max-rate", type=float, default=0.05, help="skip features firing more")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from steer.activations import (
        OutlierFilter,
        iter_activations,
        keep_mask,
        layer_output,
        pack_windows,
        read_documents,
        special_token_ids,
    )
    from steer.model import load_model
    from steer.sae.formats import load_sae

    model = load_model(device="cpu")
    sae = load_sae(args.sae)
    layer = sae.cfg.layer
    tok = model.tokenizer
    special = torch.tensor(special_token_ids(tok))

    # Held-out text: top-k codes of every kept token (indices + values, not the dense codes).
    windows = pack_windows(tok, read_documents(CORPUS / "wikitext2_raw_test.txt", tok), 128)
    windows = windows[: args.tokens // 128]
    codes_v, codes_i, where = [], [], []
    general_sum = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    general_fire = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    n_general = 0
    with torch.no_grad():
        for batch in iter_activations(model, layer, windows, batch_windows=16):
            f = sae.encode(batch.acts)
            top = f.topk(sae.cfg.k, dim=-1)
            codes_v.append(top.values.half())
            codes_i.append(top.indices.short())
            where.append(torch.stack([batch.window, batch.position], 1))
            general_sum += f.double().sum(0)
            general_fire += (f > 0).double().sum(0)
            n_general += len(f)
    codes_v, codes_i, where = torch.cat(codes_v), torch.cat(codes_i), torch.cat(where)
    general_mean = general_sum / n_general
    print(f"held-out tokens: {n_general}")

    def concept_codes(sentences: list[str]) -> tuple[torch.Tensor, list[str]]:
        # One passage, not sentence by sentence: the first positions after a document start
        # carry large position-specific activations that would swamp short sentences.
        ids = tok(" ".join(sentences), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[0, *ids]])  # a leading separator, as in the packed training data
        h = layer_output(model, layer, ids)
        keep = keep_mask(ids, h, special, OutlierFilter())
        keep[:, :4] = False
        with torch.no_grad():
            codes = sae.encode(h[keep])
        return codes, [tok.decode([i]) for i in ids[keep].tolist()]

    def top_contexts(feature: int, n: int = 8) -> list[dict]:
        hit = codes_i == feature
        vals = torch.where(hit, codes_v.float(), torch.zeros(())).max(1).values
        best = vals.topk(n).indices
        out = []
        for r in best.tolist():
            if vals[r] <= 0:
                break
            w, p = where[r].tolist()
            ids = windows[w].tolist()
            left = tok.decode(ids[max(0, p - 12) : p])
            out.append(
                {
                    "act": round(float(vals[r]), 2),
                    "token": tok.decode([ids[p]]),
                    "context": f"{left}[[{tok.decode([ids[p]])}]]{tok.decode(ids[p + 1 : p + 4])}",
                }
            )
        return out

    report = {}
    for concept, sentences in CONCEPTS.items():
        codes, words = concept_codes(sentences)
        cm = codes.double().mean(0)
        # Features that fire on a large share of all text (position, syntax) are no concept.
        score = torch.where(general_fire / n_general < args.max_rate, cm - general_mean, -1e9)
        best = score.topk(args.per_concept).indices.tolist()
        report[concept] = []
        print(f"\n=== {concept}")
        for fid in best:
            entry = {
                "feature": fid,
                "concept_mean": round(float(cm[fid]), 3),
                "general_mean": round(float(general_mean[fid]), 3),
                "general_fire_rate": round(float(general_fire[fid] / n_general), 5),
                "concept_tokens": [
                    f"{words[i]}:{v:.0f}"
                    for v, i in zip(*codes[:, fid].topk(10), strict=True)
                    if v > 0
                ],
                "top_contexts": top_contexts(fid),
            }
            report[concept].append(entry)
            print(
                f"feature {fid}: concept {entry['concept_mean']:.2f} vs general "
                f"{entry['general_mean']:.3f} (fires on {entry['general_fire_rate']:.3%})"
            )
            print("    on concept sentences:", ", ".join(entry["concept_tokens"]))
            for c in entry["top_contexts"]:
                print(f"    {c['act']:7.2f}  {c['context']!r}")
    out = Path(args.sae) / "demo_features.json"
    result = {"held_out_tokens": n_general, "recommended": RECOMMENDED, "concepts": report}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
