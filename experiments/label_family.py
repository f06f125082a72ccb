"""A first set of labels for an SAE: for each concept of ``data/concepts.yaml``, the features that
fire on its sentences far more than on held-out text, written as steer labels (``source: auto``).

Every text -- a concept sentence, or a held-out sentence of about the same length (WikiText-2
test and movie reviews, lightly detokenized) -- becomes one number per feature: its maximum
activation over the positions training kept, as ``steer features contrast`` pools
(:mod:`steer.features.contrast`). For each concept its five sentences are the positives and
the held-out sentences the negatives. A feature is kept for a concept only when it clearly
separates them (the thresholds are options; defaults):

* AUROC >= 0.97 against the held-out sentences and Cohen's d >= 3.5;
* it fires on at least 4 of the 5 concept sentences and on at most 15% of held-out sentences;
* AUROC >= 0.9 against the other concepts' sentences (not a feature of tidy one-line
  sentences in general).

A feature that passes for several concepts goes to the one it separates best; each concept
keeps its best ``--per-concept`` features (by d: on five sentences many features reach an
AUROC near 1, while d still tells them apart), named after the concept
(``sea``, ``sea-2``). The description says how the feature was found, its scores and the
concept tokens it fires on most. ``--out`` gets the labels (steer's ``steer-labels/1``);
``--report`` every concept's top candidates with their scores, kept or not. It never writes
into the SAE folder unless ``--out`` says so, and never into an SAE shipped with steer.
About two minutes per SAE on one CPU thread (~30k tokens encoded):

    OMP_NUM_THREADS=1 python experiments/label_family.py --sae /work/family/L6/sae \\
        --out /work/family/L6/labels.json [--name smollm2-135m-res6-topk]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import CORPUS, load_data

# General held-out text, as in find_demo_features.py: the baseline a concept is compared with.
HELD_OUT = [
    CORPUS / "wikitext2_raw_test.txt",
    CORPUS / "labelled/pang_lee_movie_review_polarity.jsonl",
]
# WikiText-2 keeps its tokenizer's spacing (" @-@ ", " , "); undone so that held-out sentences
# read like the concept sentences and no feature separates them by punctuation style alone.
DETOKENIZE = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" ,", ","), (" .", "."),
              (" 's", "'s"), (" ;", ";"), (" :", ":"), ("( ", "("), (" )", ")")]  # fmt: skip
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", required=True, help="SAE folder or builtin name.")
    ap.add_argument("--out", required=True, type=Path, help="labels.json to write.")
    ap.add_argument("--report", type=Path, help="JSON of every concept's top candidates.")
    ap.add_argument("--name", help="The labels file's 'sae' field (default: the folder's name).")
    ap.add_argument("--held-out", type=int, default=1200, help="Held-out sentences.")
    ap.add_argument("--per-concept", type=int, default=2, help="Most labels per concept.")
    ap.add_argument("--min-auroc", type=float, default=0.97)
    ap.add_argument("--min-d", type=float, default=3.5, help="Least Cohen's d.")
    ap.add_argument("--min-fire", type=float, default=0.8, help="Least share of concept texts.")
    ap.add_argument("--max-held-fire", type=float, default=0.15)
    ap.add_argument("--min-auroc-others", type=float, default=0.9)
    ap.add_argument("--concepts", help="Comma-separated subset of data/concepts.yaml.")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def held_out_sentences(tokenizer, n: int, seed: int) -> list[str]:
    """``n`` distinct sentences of 8 to 25 words, half from each HELD_OUT file (seeded)."""
    from steer.corpus.documents import read_documents

    rng = random.Random(seed)
    out: list[str] = []
    for i, path in enumerate(HELD_OUT):
        found, seen = [], set(out)
        for doc in read_documents(path, tokenizer):
            if doc.lstrip().startswith("="):  # a WikiText heading
                continue
            text = " ".join(doc.split())
            for old, new in DETOKENIZE:
                text = text.replace(old, new)
            for sentence in SENTENCE_END.split(text):
                if 8 <= len(sentence.split()) <= 25 and sentence not in seen:
                    seen.add(sentence)
                    found.append(sentence)
        rng.shuffle(found)
        out += found[: n // len(HELD_OUT) + (i < n % len(HELD_OUT))]
    return out


@dataclass
class Candidate:
    """One feature's scores for one concept."""

    concept: str
    feature: int
    auroc: float
    d: float
    fire_pos: float
    fire_held: float
    auroc_others: float

    def passes(self, args: argparse.Namespace) -> bool:
        """Whether it clears every threshold."""
        return (
            self.auroc >= args.min_auroc
            and self.d >= args.min_d
            and self.fire_pos >= args.min_fire
            and self.fire_held <= args.max_held_fire
            and self.auroc_others >= args.min_auroc_others
        )

    def key(self) -> tuple:
        """Best first: by d, then AUROC, then the lower id."""
        return (-self.d, -self.auroc, self.feature)


def score_concept(concept: str, pos, held, others, top: int) -> list[Candidate]:
    """The ``top`` features by AUROC (d breaking ties) of the concept's pooled texts ``pos``
    against the held-out ones, with their scores against the other concepts' texts."""
    from steer.features.contrast import auroc, cohens_d

    au, d = auroc(pos, held), cohens_d(pos, held)
    # Rank by AUROC, d breaking ties (many features reach AUROC 1 on five sentences).
    order = torch.argsort(au.double() * 1000 + d.double().clamp(-999, 999), descending=True)
    best = order[:top]
    au_others = auroc(pos[:, best], others[:, best])
    fire_pos, fire_held = (pos[:, best] > 0).float().mean(0), (held[:, best] > 0).float().mean(0)
    return [
        Candidate(
            concept,
            int(f),
            float(au[f]),
            float(d[f]),
            float(fire_pos[j]),
            float(fire_held[j]),
            float(au_others[j]),
        )
        for j, f in enumerate(best.tolist())
    ]


def choose(candidates: dict[str, list[Candidate]], args) -> dict[str, list[Candidate]]:
    """Per concept, its best passing features; a feature passing for several concepts goes to
    the one it separates best."""
    passing = [c for cs in candidates.values() for c in cs if c.passes(args)]
    owner: dict[int, Candidate] = {}
    for c in sorted(passing, key=Candidate.key):
        owner.setdefault(c.feature, c)
    chosen: dict[str, list[Candidate]] = {}
    for c in sorted(owner.values(), key=Candidate.key):
        kept = chosen.setdefault(c.concept, [])
        if len(kept) < args.per_concept:
            kept.append(c)
    return chosen


def strongest_tokens(model, sae, sentences: list[str], feature: int, n: int = 4) -> list[str]:
    """The distinct concept tokens ``feature`` fires on most."""
    from steer.features.encode import encode_texts

    acts: dict[str, float] = {}
    for enc in encode_texts(model, sae, sentences, features=[feature]):
        for tok, act in zip(enc.token_ids.tolist(), enc.acts[:, 0].tolist(), strict=True):
            word = model.tokenizer.decode([tok]).strip()
            if act > 0 and word:
                acts[word] = max(act, acts.get(word, 0.0))
    return sorted(acts, key=lambda w: -acts[w])[:n]


def describe(c: Candidate, tokens: list[str], n_texts: int, n_held: int, args) -> str:
    """The label's description: what it fires on, how it was found, its scores."""
    on = ", ".join(repr(t) for t in tokens)
    n_fired = round(c.fire_pos * n_texts)
    return (
        f"{on} in the '{c.concept}' sentences of experiments/data/concepts.yaml. Found by "
        f"experiments/label_family.py: per-sentence max activation vs {n_held} held-out "
        f"sentences (WikiText-2 test, movie reviews) AUROC {c.auroc:.3f}, Cohen's d {c.d:.1f}; "
        f"fires on {n_fired}/{n_texts} concept sentences and {c.fire_held:.1%} of held-out "
        f"ones; AUROC {c.auroc_others:.2f} vs the other concepts' sentences (kept at AUROC >= "
        f"{args.min_auroc}, d >= {args.min_d}, held-out fire <= {args.max_held_fire:.0%}, "
        f"vs others >= {args.min_auroc_others})"
    )


def check_out(path: Path) -> None:
    """Refuse to write into an SAE shipped with steer (its labels are hand-made)."""
    from steer.sae.sources import BUILTIN_DIR

    if path.resolve().is_relative_to(BUILTIN_DIR.resolve()):
        raise SystemExit(f"refusing to write into a shipped SAE: {path}")


def write_labels(path: Path, name: str, labels: dict[int, dict]) -> None:
    """``labels`` (id -> name, description, source) as a steer labels file."""
    from steer.sae.labels import FORMAT

    data = {"format": FORMAT, "sae": name, "features": {str(f): labels[f] for f in sorted(labels)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    args = parse_args()
    check_out(args.out)
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    from steer.features.encode import pool_texts
    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_and_model

    folder, sae, model = load_sae_and_model(args.sae, device="cpu")
    concepts = load_data("concepts.yaml")
    if args.concepts:
        concepts = {c: concepts[c] for c in args.concepts.split(",")}
    held = held_out_sentences(model.tokenizer, args.held_out, args.seed)
    texts = [s for sentences in concepts.values() for s in sentences]
    pooled = pool_texts(model, sae, texts + held, batch=args.batch)["max"]
    pos_all, neg = pooled[: len(texts)], pooled[len(texts) :]
    print(f"encoded {len(texts)} concept + {len(held)} held-out sentences", flush=True)

    owner = torch.tensor([i for i, c in enumerate(concepts) for _ in concepts[c]])
    candidates = {
        c: score_concept(c, pos_all[owner == i], neg, pos_all[owner != i], top=20)
        for i, c in enumerate(concepts)
    }
    chosen = choose(candidates, args)
    # The SAE's own labels, if any, shown beside the new ones (a check on the shipped SAE).
    known = load_labels(folder)
    labels = {}
    for concept, kept in chosen.items():
        for rank, c in enumerate(kept):
            tokens = strongest_tokens(model, sae, concepts[concept], c.feature)
            name = concept if rank == 0 else f"{concept}-{rank + 1}"
            desc = describe(c, tokens, len(concepts[concept]), len(held), args)
            labels[c.feature] = {"name": name, "description": desc, "source": "auto"}
            had = f"  (labelled {known[c.feature].name!r})" if c.feature in known else ""
            print(
                f"{name:16} {c.feature:5}  AUROC {c.auroc:.3f}  d {c.d:5.1f}  held fire "
                f"{c.fire_held:.1%}  vs others {c.auroc_others:.2f}  {tokens}{had}"
            )
    write_labels(args.out, args.name or folder.name, labels)
    seconds = time.perf_counter() - t0
    print(
        f"{len(labels)} labels for {len(chosen)} of {len(concepts)} concepts -> {args.out} "
        f"({seconds:.0f} s)"
    )
    if args.report:
        report = {
            "sae": str(folder),
            "held_out_sentences": len(held),
            "seconds": round(seconds, 1),
            "labels": len(labels),
            "candidates": {
                c: [{**vars(x), "passes": x.passes(args)} for x in cs]
                for c, cs in candidates.items()
            },
        }
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
