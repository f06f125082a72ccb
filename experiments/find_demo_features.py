"""Candidate features for concepts (the sea, royalty, food, sentiment, ...), with the evidence a
person needs to label them: top-activating contexts on held-out text.

For each concept: the mean activation of every feature on a few hand-written concept sentences
(``experiments/data/concepts.yaml``) against general held-out text (WikiText-2 test and movie
reviews); the best-separating features that fire on less than ``--max-rate`` of all tokens are
candidates, shown with their top-activating contexts over ``--tokens`` held-out tokens.
``--features`` shows the contexts of chosen ids instead. A person reads the contexts and names
the features with ``steer features label SAE ID NAME --description ...`` (labels.json beside
the SAE); this script writes nothing into the SAE folder.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/find_demo_features.py \
        [--tokens 102400] [--concepts sea,food] [--features 12,345] \
        [--out /tmp/steer-label-candidates.json]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import CORPUS, load_data

# General held-out text: the baseline a concept's sentences are compared with.
HELD_OUT = [
    CORPUS / "wikitext2_raw_test.txt",
    CORPUS / "labelled/pang_lee_movie_review_polarity.jsonl",
]
# A few hand-written sentences per concept.
CONCEPTS = load_data("concepts.yaml")


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", default="smollm2-135m-res12-topk")
    ap.add_argument("--tokens", type=int, default=102_400)
    ap.add_argument("--per-concept", type=int, default=3)
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--max-rate", type=float, default=0.02, help="skip features firing more")
    ap.add_argument("--concepts", default=None, help="comma-separated subset of the concepts")
    ap.add_argument("--features", default=None, help="comma-separated ids: show their contexts")
    ap.add_argument("--out", default="/tmp/steer-label-candidates.json")
    return ap.parse_args()


@dataclass
class HeldOut:
    """The SAE on general held-out text: top-k codes of every kept token, where each token is,
    and every feature's mean activation and firing rate over all of them."""

    windows: torch.Tensor  # [W, 128] token ids
    codes_v: torch.Tensor  # [N, k] top-k activations, fp16
    codes_i: torch.Tensor  # [N, k] their feature ids
    where: torch.Tensor  # [N, 2] (window, position) of each kept token
    mean: torch.Tensor  # [d_sae]
    rate: torch.Tensor  # [d_sae]

    @property
    def n_tokens(self) -> int:
        return len(self.where)


def encode_held_out(model, sae, tokens: int) -> HeldOut:
    """Encode about ``tokens`` tokens of held-out text, half from each HELD_OUT file."""
    from steer.corpus.documents import read_documents
    from steer.corpus.windows import pack_windows
    from steer.training.activations import iter_activations

    tok = model.tokenizer
    k = int(getattr(sae.cfg, "k", None) or 64)
    windows = []
    for path in HELD_OUT:
        packed = pack_windows(tok, read_documents(path, tok), 128)
        windows.append(packed[: tokens // (128 * len(HELD_OUT))])
    windows = torch.cat(windows)
    codes_v, codes_i, where = [], [], []
    total = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    with torch.no_grad():
        for batch in iter_activations(model, sae.cfg.layer, windows, batch_windows=16):
            f = sae.encode(batch.acts)
            top = f.topk(k, dim=-1)
            codes_v.append(top.values.half())
            codes_i.append(top.indices.int())
            where.append(torch.stack([batch.window, batch.position], 1))
            total += f.double().sum(0)
            fired += (f > 0).double().sum(0)
    where = torch.cat(where)
    return HeldOut(
        windows=windows,
        codes_v=torch.cat(codes_v),
        codes_i=torch.cat(codes_i),
        where=where,
        mean=total / len(where),
        rate=fired / len(where),
    )


def concept_codes(model, sae, sentences: list[str]) -> tuple[torch.Tensor, list[str]]:
    """SAE codes of the kept tokens of a concept's sentences, and those tokens as text."""
    from steer.model.positions import OutlierFilter, keep_mask, special_token_ids
    from steer.model.trace import layer_output

    tok = model.tokenizer
    # One passage, not sentence by sentence: the first positions after a document start
    # carry large position-specific activations that would swamp short sentences.
    ids = tok(" ".join(sentences), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[0, *ids]])  # a leading separator, as in the packed training data
    h = layer_output(model, sae.cfg.layer, ids)
    keep = keep_mask(ids, h, torch.tensor(special_token_ids(tok)), OutlierFilter())
    keep[:, :4] = False
    with torch.no_grad():
        codes = sae.encode(h[keep])
    return codes, [tok.decode([i]) for i in ids[keep].tolist()]


def top_contexts(held: HeldOut, tok, feature: int, n: int) -> list[dict]:
    """The ``n`` held-out tokens ``feature`` fires on most, each with 14 tokens before it and
    4 after (the token itself in [[ ]]); repeated contexts count once."""
    hit = held.codes_i == feature
    vals = torch.where(hit, held.codes_v.float(), torch.zeros(())).max(1).values
    out, seen = [], set()
    for r in vals.topk(n * 4).indices.tolist():
        if vals[r] <= 0 or len(out) >= n:
            break
        w, p = held.where[r].tolist()
        ids = held.windows[w].tolist()
        context = (
            f"{tok.decode(ids[max(0, p - 14) : p])}[[{tok.decode([ids[p]])}]]"
            f"{tok.decode(ids[p + 1 : p + 5])}"
        )
        if context in seen:
            continue
        seen.add(context)
        out.append({"act": round(float(vals[r]), 1), "context": " ".join(context.split())})
    return out


def describe(held: HeldOut, tok, labels, fid: int, n_contexts: int) -> dict:
    """Print and return one feature's label (if any), firing rate and top contexts."""
    entry = {
        "feature": fid,
        "label": labels[fid].name if fid in labels else None,
        "general_fire_rate": round(float(held.rate[fid]), 5),
        "top_contexts": top_contexts(held, tok, fid, n_contexts),
    }
    print(
        f"feature {fid}{' (' + entry['label'] + ')' if entry['label'] else ''}: "
        f"fires on {entry['general_fire_rate']:.3%} of tokens"
    )
    for c in entry["top_contexts"]:
        print(f"    {c['act']:6.1f}  {c['context']!r}")
    return entry


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)

    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_and_model

    folder, sae, model = load_sae_and_model(args.sae, device="cpu")
    labels = load_labels(folder)
    tok = model.tokenizer
    held = encode_held_out(model, sae, args.tokens)
    print(f"held-out tokens: {held.n_tokens}")

    report: dict = {"sae": folder.name, "held_out_tokens": held.n_tokens, "concepts": {}}
    if args.features:
        report["features"] = [
            describe(held, tok, labels, int(f), args.contexts) for f in args.features.split(",")
        ]
    else:
        chosen = args.concepts.split(",") if args.concepts else list(CONCEPTS)
        for concept in chosen:
            codes, words = concept_codes(model, sae, CONCEPTS[concept])
            cm = codes.double().mean(0)
            # Features that fire on a large share of all text (position, syntax) are no concept.
            score = torch.where(held.rate < args.max_rate, cm - held.mean, -1e9)
            print(f"\n=== {concept}")
            report["concepts"][concept] = []
            for fid in score.topk(args.per_concept).indices.tolist():
                on = [
                    f"{words[i]}:{v:.0f}"
                    for v, i in zip(*codes[:, fid].topk(6), strict=True)
                    if v > 0
                ]
                print(f"  concept mean {cm[fid]:.2f}; on the sentences: {', '.join(on)}")
                entry = describe(held, tok, labels, fid, args.contexts)
                entry.update(concept_mean=round(float(cm[fid]), 3), concept_tokens=on)
                report["concepts"][concept].append(entry)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
