"""``steer features contrast`` on two labelled sets, with a held-out split.

1. Movie reviews (Pang & Lee polarity, 2,000 reviews): positive vs negative. A review is
   ~800 tokens and its verdict is usually at the end, so each text is the review's last
   ``--tail-chars`` characters (cut at a word boundary), read up to ``--ctx-len`` tokens.
2. Tweets (Davidson et al.): offensive or hate speech (classes 0 and 1) vs neither (class 2),
   balanced by sampling. The tweets are offensive on purpose: this script never prints one;
   it writes them only into the split files under ``--work``.

Each set is shuffled (seeded) and split in half. Features are ranked on the train half with
:func:`steer.features.contrast.contrast`; the best ``--top`` are then scored on the test half
(AUROC oriented by the train direction: 1.0 = perfect, 0.5 = chance).

The split files are plain text, one text per line, so the same split can be run through the
CLI: ``steer features contrast SAE --pos WORK/movies/train_pos.txt --neg .../train_neg.txt``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/contrast_labelled.py [--n 600]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import CORPUS, one_line, split, tail, write_lines

LABELLED = CORPUS / "labelled"


def movie_sets(n: int, tail_chars: int) -> tuple[list[str], list[str]]:
    """Pang & Lee reviews, (positive, negative): the first ``n`` of each (0: all), each cut to
    its last ``tail_chars`` characters, where the verdict usually is."""
    pos, neg = [], []
    with open(LABELLED / "pang_lee_movie_review_polarity.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            (pos if rec["label"] == "pos" else neg).append(tail(rec["text"], tail_chars))
    return pos[:n] if n else pos, neg[:n] if n else neg


def tweet_sets(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Davidson et al. tweets, (offensive or hate speech, neither): a seeded sample of equal
    size, at most ``n`` each (0: as many as the smaller class)."""
    pos, neg = [], []
    with open(LABELLED / "davidson_hate_offensive_tweets.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = one_line(row["tweet"])
            if text:
                (neg if row["class"] == "2" else pos).append(text)
    rng = random.Random(seed)
    rng.shuffle(pos)
    rng.shuffle(neg)
    k = min(n or len(neg), len(pos), len(neg))
    return pos[:k], neg[:k]


def run_set(name, pos, neg, lm, sae, labels, args) -> dict:
    """Split one set, encode the halves, rank on train and score the best ``--top`` on test."""
    from steer.corpus.texts import read_texts
    from steer.features.contrast import auroc, contrast, pooled_activations

    work = Path(args.work) / name
    files = {}
    for side, texts in (("pos", pos), ("neg", neg)):
        train, test = split(texts, args.seed)
        files[f"train_{side}"] = write_lines(work / f"train_{side}.txt", train)
        files[f"test_{side}"] = write_lines(work / f"test_{side}.txt", test)
    acts, t0 = {}, time.perf_counter()
    for key, path in files.items():
        texts = read_texts(path, lm.tokenizer)
        acts[key] = pooled_activations(
            lm, sae, texts, ctx_len=args.ctx_len, batch=args.batch, desc=f"{name} {key}"
        )
    seconds = time.perf_counter() - t0
    ranked = contrast(acts["train_pos"], acts["train_neg"])[: args.top]
    test_au = auroc(acts["test_pos"], acts["test_neg"])
    rows = []
    for r in ranked:
        t = float(test_au[r.feature])
        rows.append(
            {
                "feature": r.feature,
                "label": labels[r.feature].name if r.feature in labels else None,
                "direction": r.direction,
                "train_auroc": round(r.auroc, 4),
                "test_auroc": round(t, 4),
                # oriented by the train direction: 1.0 = perfect, 0.5 = chance
                "test_separation": round(t if r.direction == "+" else 1 - t, 4),
                "train_cohens_d": round(r.cohens_d, 3),
                "fire_pos": round(r.fire_pos, 3),
                "fire_neg": round(r.fire_neg, 3),
            }
        )
    return {
        "n_train": [len(acts["train_pos"]), len(acts["train_neg"])],
        "n_test": [len(acts["test_pos"]), len(acts["test_neg"])],
        "encode_seconds": round(seconds, 1),
        "top": rows,
    }


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", default="smollm2-135m-res12-topk")
    ap.add_argument("--n", type=int, default=600, help="texts per class (0: all)")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--tail-chars", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/steer-contrast-labelled")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--sets", default="movies,tweets")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)

    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_and_model

    folder, sae, lm = load_sae_and_model(args.sae)
    labels = load_labels(folder)
    makers = {
        "movies": lambda: movie_sets(args.n, args.tail_chars),
        "tweets": lambda: tweet_sets(args.n, args.seed),
    }
    result = {"sae": folder.name, "d_sae": int(sae.cfg.d_sae), "args": vars(args), "sets": {}}
    for name in args.sets.split(","):
        pos, neg = makers[name]()
        res = run_set(name, pos, neg, lm, sae, labels, args)
        result["sets"][name] = res
        print(
            f"\n{name}: train {res['n_train']} / test {res['n_test']} (pos, neg) texts, "
            f"encoded in {res['encode_seconds']} s"
        )
        print("| feature | label | dir | train AUROC | test AUROC | test separation | d |")
        print("|---|---|---|---|---|---|---|")
        for r in res["top"]:
            print(
                f"| {r['feature']} | {r['label'] or ''} | {r['direction']} | "
                f"{r['train_auroc']:.3f} | {r['test_auroc']:.3f} | {r['test_separation']:.3f} "
                f"| {r['train_cohens_d']:+.2f} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
