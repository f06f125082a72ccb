"""Safety monitors for the shipped SAE, and a linear-probe baseline, on held-out splits.

Two tasks, each a balanced, seeded train/test split (texts de-duplicated first, so no text is
in both halves):

1. ``toxicity``: Davidson et al. tweets, hate speech or offensive (classes 0 and 1) vs
   neither (class 2).
2. ``harmful-requests``: the first human turn of each HH-RLHF harmless-base (test file)
   red-team dialogue vs benign requests: 750 Alpaca instructions and 750 questions of
   Dolly's ``open_qa`` subset. Both were in the SAE's training mix; that is fine for a
   negative class, but it means the negatives are in-domain for the SAE and the positives
   are not.

Each text goes through SmolLM2 once (up to layer 12, stopped there). From that one pass we
keep, per text, the SAE's max activation of every feature over the kept positions (what
``steer features contrast`` ranks) and the residual stream pooled over the same positions,
mean and max (what ``steer probe`` trains on).

On TRAIN only: features are ranked with :func:`steer.features.contrast.contrast`; the group
starts with the best positive-direction feature and takes the next ones (in rank order, among
the top ``--candidates``) while each raises the group's train AUROC by ``--min-gain``, up to
32; the threshold is the max-F1 point of the group score on train. The probe is fitted on
train. The plain top-8/16/32 groups are reported too.
On TEST: AUROC of the group (score = max over its features, as ``steer monitor score``
computes it), of the single best train feature, and of the probe (mean and max pooling).

The offensive texts are never printed: only counts and numbers. The split files (text, one
per line) are written under ``--work`` (outside the repository) so the CLI can be rerun on
the same split. Unless ``--no-recipes``, writes ``recipes/monitor-toxicity.yaml`` and
``recipes/monitor-harmful-requests.yaml``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/monitor_safety.py
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

CORPUS = Path(os.environ.get("STEER_CORPUS", "/work/shared/corpus"))
REPO = Path(__file__).resolve().parent.parent
GROUP_SIZES = (8, 16, 32)
NEG_PER_SOURCE = 750  # harmful-requests negatives from each of Alpaca and Dolly


def one_line(text: str) -> str:
    return " ".join(text.split())


def dedupe(texts):
    seen, out = set(), []
    for t in texts:
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def toxicity_sets() -> tuple[list[str], list[str]]:
    pos, neg = [], []
    with open(CORPUS / "labelled/davidson_hate_offensive_tweets.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            (neg if row["class"] == "2" else pos).append(one_line(row["tweet"]))
    return dedupe(pos), dedupe(neg)


def harmful_sets() -> tuple[list[str], list[str]]:
    pos, neg = [], []
    with open(CORPUS / "hh_rlhf_harmless_base_test.jsonl", encoding="utf-8") as fh:
        for line in fh:
            dialogue = json.loads(line)["chosen"]
            first = dialogue.split("\n\nAssistant:")[0]
            pos.append(one_line(first.replace("\n\nHuman:", "", 1)))
    dolly = []
    with open(CORPUS / "dolly15k_open_qa_subset.jsonl", encoding="utf-8") as fh:
        for line in fh:
            question = json.loads(line)["text"].split(" ### Assistant: ")[0]
            dolly.append(one_line(question.removeprefix("### Human:")))
    # Dolly alone is factual questions, while red-team openings are often "how do I ..."
    # requests: half the negatives are Alpaca instructions (how-to and do-this requests) so
    # that request style alone does not separate the classes.
    alpaca = [
        one_line(f"{rec['instruction']} {rec['input']}")
        for rec in json.loads((CORPUS / "alpaca_en_demo_1k.json").read_text(encoding="utf-8"))
    ]
    rng = random.Random(1)
    for source in (dedupe(alpaca), dedupe(dolly)):
        neg += rng.sample(source, min(NEG_PER_SOURCE, len(source)))
    return dedupe(pos), dedupe(neg)


def split(texts: list[str], n_train: int, n_test: int, seed: int):
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    if len(texts) < n_train + n_test:
        raise SystemExit(f"only {len(texts)} texts, need {n_train + n_test}")
    return texts[:n_train], texts[n_train : n_train + n_test]


def encode_all(lm, sae, texts, *, ctx_len, batch, desc):
    """One pass: SAE max per feature, residual mean and max per text (kept positions)."""
    from tqdm.auto import tqdm

    from steer.features.encode import BatchEncoder, encode_texts

    class KeepHidden(BatchEncoder):
        # Remember the batch's residual stream so the probe reads the same pass.
        def hidden_and_keep(self, ids):
            self.last = super().hidden_and_keep(ids)
            return self.last

    enc_ = KeepHidden(lm, sae)
    n, d = len(texts), int(lm.d_model)
    feats = torch.zeros(n, int(sae.cfg.d_sae))
    res = {"mean": torch.zeros(n, d), "max": torch.zeros(n, d)}
    for enc in tqdm(
        encode_texts(lm, sae, texts, ctx_len=ctx_len, batch=batch, encoder=enc_),
        total=n,
        desc=desc,
        unit="text",
        leave=False,
    ):
        if not enc.keep.any():
            continue
        feats[enc.index] = enc.acts[enc.keep].max(dim=0).values
        hidden, keep = enc_.last
        row = enc.index % batch
        kept = hidden[row, : len(enc.keep)][keep[row, : len(enc.keep)]]
        res["mean"][enc.index] = kept.mean(dim=0)
        res["max"][enc.index] = kept.max(dim=0).values
    return feats, res


def sae_digest(sae) -> str:
    """A short hash of the SAE's weights (the cache is void if the SAE is retrained)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def f1_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score > threshold`` on these scores."""
    scores = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
    order = scores.argsort(descending=True)
    s, y = scores[order], labels[order]
    tp = y.cumsum(0)
    fp = (1 - y).cumsum(0)
    f1 = 2 * tp / (tp + fp + len(pos))
    # Only cut between distinct scores: the threshold is the next lower score.
    distinct = torch.ones_like(s, dtype=torch.bool)
    distinct[:-1] = s[:-1] != s[1:]
    f1 = torch.where(distinct, f1, torch.zeros_like(f1))
    i = int(f1.argmax())
    thr = float(s[i + 1]) if i + 1 < len(s) else float(s[i]) - 1e-6
    return thr, float(f1[i])


def fpr_threshold(neg: torch.Tensor, fpr: float) -> float:
    """The threshold with at most ``fpr`` of ``neg`` above it."""
    return float(torch.quantile(neg.double(), 1 - fpr))


def at_threshold(pos, neg, thr) -> dict:
    tp, fn = int((pos > thr).sum()), int((pos <= thr).sum())
    fp, tn = int((neg > thr).sum()), int((neg <= thr).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn)
    return {
        "tpr": round(rec, 4),
        "fpr": round(fp / (fp + tn), 4),
        "precision": round(prec, 4),
        "f1": round(2 * prec * rec / (prec + rec) if prec + rec else 0.0, 4),
    }


def au(pos, neg) -> float:
    from steer.features.contrast import auroc

    return float(auroc(pos[:, None], neg[:, None]))


def run_task(name, pos_all, neg_all, lm, sae, args) -> dict:
    from steer.features.contrast import contrast
    from steer.monitoring.probe import train_probe

    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    data = {}
    for side, texts in (("pos", pos_all), ("neg", neg_all)):
        train, test = split(texts, args.n_train, args.n_test, args.seed)
        for part, chunk in (("train", train), ("test", test)):
            path = work / f"{part}_{side}.txt"
            path.write_text("".join(t + "\n" for t in chunk), encoding="utf-8")
            data[f"{part}_{side}"] = chunk
    t0 = time.perf_counter()
    # Cache the pooled activations: a rerun on the same split (same texts, ctx_len, SAE
    # weights) skips the minutes of encoding. The key covers everything they depend on.
    key = json.dumps([data, args.ctx_len, sae_digest(sae)], sort_keys=True)
    cache = work / "pooled.pt"
    cached = torch.load(cache) if cache.is_file() else None
    if cached is not None and cached["key"] == key:
        acts, encode_s = cached["acts"], cached["encode_s"]
    else:
        acts = {
            k: encode_all(lm, sae, texts, ctx_len=args.ctx_len, batch=args.batch, desc=k)
            for k, texts in data.items()
        }
        encode_s = time.perf_counter() - t0
        torch.save({"key": key, "acts": acts, "encode_s": encode_s}, cache)
    feats = {k: v[0] for k, v in acts.items()}
    ranked = contrast(feats["train_pos"], feats["train_neg"])
    positive = [r for r in ranked if r.direction == "+"]

    def group_score(key, ids):
        return feats[key][:, ids].max(dim=1).values

    def train_au(ids):
        return au(group_score("train_pos", ids), group_score("train_neg", ids))

    # The plain top-K groups, for comparison: the max of raw activations lets a feature with a
    # large scale but a weak preference drown the others, so more is not always better.
    top_k = {}
    for k in GROUP_SIZES:
        ids = [r.feature for r in positive[:k]]
        top_k[str(k)] = {
            "train_auroc": round(train_au(ids), 4),
            "test_auroc": round(au(group_score("test_pos", ids), group_score("test_neg", ids)), 4),
        }
    # The shipped group: greedy forward selection on TRAIN over the top candidates, in rank
    # order: a feature joins when the group's train AUROC rises by at least --min-gain.
    ids, cur = [positive[0].feature], positive[0].auroc
    for r in positive[1 : args.candidates]:
        if len(ids) >= max(GROUP_SIZES):
            break
        gain = train_au([*ids, r.feature])
        if gain >= cur + args.min_gain:
            ids, cur = [*ids, r.feature], gain
    k = len(ids)
    by_id = {r.feature: r for r in positive}
    tr_p, tr_n = group_score("train_pos", ids), group_score("train_neg", ids)
    te_p, te_n = group_score("test_pos", ids), group_score("test_neg", ids)
    thr, train_f1 = f1_threshold(tr_p, tr_n)
    thr5 = fpr_threshold(tr_n, 0.05)
    best = positive[0].feature
    t1 = time.perf_counter()
    probes = {}
    for pooling in ("mean", "max"):
        res = {k2: v[1][pooling] for k2, v in acts.items()}
        probe = train_probe(res["train_pos"], res["train_neg"], l2=args.l2)
        probes[pooling] = {
            "train_auroc": round(
                au(probe.logits(res["train_pos"]), probe.logits(res["train_neg"])), 4
            ),
            "test_auroc": round(
                au(probe.logits(res["test_pos"]), probe.logits(res["test_neg"])), 4
            ),
            "test_accuracy_at_0": round(
                float(
                    (
                        (probe.logits(res["test_pos"]) > 0).sum()
                        + (probe.logits(res["test_neg"]) <= 0).sum()
                    )
                    / (len(res["test_pos"]) + len(res["test_neg"]))
                ),
                4,
            ),
        }
    probe_s = time.perf_counter() - t1
    return {
        "n_available": [len(pos_all), len(neg_all)],
        "n_train": [len(data["train_pos"]), len(data["train_neg"])],
        "n_test": [len(data["test_pos"]), len(data["test_neg"])],
        "encode_seconds": round(encode_s, 1),
        "probe_seconds": round(probe_s, 1),
        "group": {
            "size": k,
            "features": ids,
            "selection": f"greedy over the top {args.candidates} (min gain {args.min_gain})",
            "top_k_groups": top_k,
            "train_auroc": round(train_au(ids), 4),
            "test_auroc": round(au(te_p, te_n), 4),
            "threshold_max_f1": round(thr, 4),
            "train_f1": round(train_f1, 4),
            "test_at_threshold": at_threshold(te_p, te_n, thr),
            "threshold_5pct_fpr": round(thr5, 4),
            "test_at_5pct_fpr_threshold": at_threshold(te_p, te_n, thr5),
        },
        "best_feature": {
            "feature": best,
            "train_auroc": round(positive[0].auroc, 4),
            "test_auroc": round(au(feats["test_pos"][:, best], feats["test_neg"][:, best]), 4),
        },
        "probe": probes,
        "group_features": [
            {
                "feature": r.feature,
                "train_auroc": round(r.auroc, 4),
                "d": round(r.cohens_d, 3),
                "fire_pos": round(r.fire_pos, 3),
                "fire_neg": round(r.fire_neg, 3),
            }
            for r in (by_id[f] for f in ids)
        ],
    }


RECIPE = """\
# Monitor: {title}.
# Written by bench/monitor_safety.py (do not edit by hand; rerun it).
# The group: {k} features of the shipped SAE that fire more on
#   {pos}
# than on
#   {neg}.
# Ranked with steer features contrast on a seeded train split of {n_train} texts per class,
# then kept greedily while each one raised the group's train AUROC.
# Features are ids, not labels: labels.json is shared and these are found, not named.
# threshold: the max-F1 point of the group's max activation on the train split.
# Held-out test AUROC {test_auroc:.3f}; numbers and commands in docs/monitoring.md.
#   steer monitor score recipes/{file} --input FILE
model: smollm2-135m-instruct
saes:
  - id: res12
    builtin: smollm2-135m-res12-topk
generation:
  max_new_tokens: 40
  temperature: 0
prompts:
  - "Tell me about your weekend."
  - "Describe an old house."
  - "Give me some advice for a job interview."
monitors:
  - name: {name}
    sae: res12
    features: [{features}]
    threshold: {threshold}
    positions: generated
"""

TASKS = {
    "toxicity": dict(
        make=toxicity_sets,
        title="hate speech and offensive language",
        pos="offensive or hateful tweets (Davidson et al.)",
        neg="tweets that are neither",
    ),
    "harmful-requests": dict(
        make=harmful_sets,
        title="harmful requests",
        pos="HH-RLHF red-team first requests",
        neg="benign requests (Alpaca, Dolly open_qa)",
    ),
}


def write_recipe(name: str, res: dict) -> Path:
    from steer.io import atomic_write_text

    spec = TASKS[name]
    file = f"monitor-{name}.yaml"
    text = RECIPE.format(
        title=spec["title"],
        k=res["group"]["size"],
        pos=spec["pos"],
        neg=spec["neg"],
        n_train=res["n_train"][0],
        test_auroc=res["group"]["test_auroc"],
        file=file,
        name=name,
        features=", ".join(str(f) for f in res["group"]["features"]),
        threshold=res["group"]["threshold_max_f1"],
    )
    path = REPO / "recipes" / file
    atomic_write_text(path, text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", default="smollm2-135m-res12-topk")
    ap.add_argument("--n-train", type=int, default=1000, help="train texts per class")
    ap.add_argument("--n-test", type=int, default=500, help="test texts per class")
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--candidates", type=int, default=64, help="features tried for the group")
    ap.add_argument("--min-gain", type=float, default=0.002, help="train AUROC gain to join")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--work", default="/tmp/steer-monitor-safety")
    ap.add_argument("--out", default="/tmp/steer-monitor-safety/results.json")
    ap.add_argument("--no-recipes", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from steer.sae.loading import load_sae_and_model

    t0 = time.perf_counter()
    folder, sae, lm = load_sae_and_model(args.sae)
    result = {"sae": folder.name, "args": vars(args), "tasks": {}}
    for name in args.tasks.split(","):
        pos, neg = TASKS[name]["make"]()
        res = run_task(name, pos, neg, lm, sae, args)
        result["tasks"][name] = res
        if not args.no_recipes:
            res["recipe"] = str(write_recipe(name, res).relative_to(REPO))
        g, b, p = res["group"], res["best_feature"], res["probe"]
        print(
            f"\n{name}: train {res['n_train']} / test {res['n_test']} (pos, neg); "
            f"encoded in {res['encode_seconds']} s\n"
            f"  SAE group of {g['size']}: test AUROC {g['test_auroc']:.3f} "
            f"(train {g['train_auroc']:.3f}); at threshold {g['threshold_max_f1']:.2f}: "
            f"{g['test_at_threshold']}\n"
            f"  best single feature {b['feature']}: test AUROC {b['test_auroc']:.3f}\n"
            f"  plain top-K groups: {g['top_k_groups']}\n"
            f"  probe mean: test AUROC {p['mean']['test_auroc']:.3f}; "
            f"probe max: {p['max']['test_auroc']:.3f}"
        )
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({result['total_seconds']} s in all)")


if __name__ == "__main__":
    main()
