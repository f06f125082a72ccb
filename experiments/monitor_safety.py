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
the same split. With ``--write-recipes`` it writes ``recipes/monitor-toxicity.yaml`` and
``recipes/monitor-harmful-requests.yaml`` as they were first shipped; the shipped recipes now
come from ``experiments/monitor_transfer.py`` (the detector that transfers best across
datasets), so by default this study leaves them alone.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/monitor_safety.py
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
from common import (
    CORPUS,
    DATA,
    REPO,
    dedupe,
    load_data,
    one_line,
    request_sources,
    split,
    write_lines,
)

from steer.monitoring.thresholds import (
    fpr_threshold,
    max_f1_threshold,
    metrics_at_threshold,
    score_auroc,
)

GROUP_SIZES = (8, 16, 32)
NEG_PER_SOURCE = 750  # harmful-requests negatives from each of Alpaca and Dolly
# Per task, how its recipe describes it (title, pos, neg); the texts come from *_sets below.
TASKS = load_data("monitor_tasks.yaml")
# The recipe written per task: a text template with str.format fields ({title}, {features}...).
RECIPE_TEMPLATE = "monitor_recipe.yaml.template"


def toxicity_sets() -> tuple[list[str], list[str]]:
    """Davidson et al. tweets: (hate speech or offensive, neither), de-duplicated."""
    pos, neg = [], []
    with open(CORPUS / "labelled/davidson_hate_offensive_tweets.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            (neg if row["class"] == "2" else pos).append(one_line(row["tweet"]))
    return dedupe(pos), dedupe(neg)


def harmful_sets() -> tuple[list[str], list[str]]:
    """(HH-RLHF red-team first requests, Alpaca and Dolly requests), de-duplicated."""
    pos, alpaca, dolly = request_sources()
    neg = []
    # Dolly alone is factual questions, while red-team openings are often "how do I ..."
    # requests: half the negatives are Alpaca instructions (how-to and do-this requests) so
    # that request style alone does not separate the classes.
    rng = random.Random(1)
    for source in (dedupe(alpaca), dedupe(dolly)):
        neg += rng.sample(source, min(NEG_PER_SOURCE, len(source)))
    return dedupe(pos), dedupe(neg)


# Which texts make up each task's classes.
MAKERS = {"toxicity": toxicity_sets, "harmful-requests": harmful_sets}


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


def write_splits(work: Path, pos_all, neg_all, args) -> dict[str, list[str]]:
    """The seeded train/test split of each class, also written as one-text-per-line files
    (``train_pos.txt`` ...) so the CLI can be rerun on it."""
    data = {}
    for side, texts in (("pos", pos_all), ("neg", neg_all)):
        train, test = split(texts, args.seed, args.n_train, args.n_test)
        for part, chunk in (("train", train), ("test", test)):
            write_lines(work / f"{part}_{side}.txt", chunk)
            data[f"{part}_{side}"] = chunk
    return data


def cached_encode(work: Path, data: dict, lm, sae, args) -> tuple[dict, float]:
    """:func:`encode_all` of every split, and the seconds the encoding took (on a cache hit,
    those of the run that filled the cache)."""
    t0 = time.perf_counter()
    # Cache the pooled activations: a rerun on the same split (same texts, ctx_len, SAE
    # weights) skips the minutes of encoding. The key covers everything they depend on.
    key = json.dumps([data, args.ctx_len, sae_digest(sae)], sort_keys=True)
    cache = work / "pooled.pt"
    cached = torch.load(cache) if cache.is_file() else None
    if cached is not None and cached["key"] == key:
        return cached["acts"], cached["encode_s"]
    acts = {
        k: encode_all(lm, sae, texts, ctx_len=args.ctx_len, batch=args.batch, desc=k)
        for k, texts in data.items()
    }
    encode_s = time.perf_counter() - t0
    torch.save({"key": key, "acts": acts, "encode_s": encode_s}, cache)
    return acts, encode_s


def group_scores(feats: dict, ids: list[int]) -> dict[str, torch.Tensor]:
    """Per split, the group's score of each text: the max over its features, as
    ``steer monitor score`` computes it."""
    return {k: v[:, ids].max(dim=1).values for k, v in feats.items()}


def pick_group(feats: dict, positive: list, args) -> tuple[list[int], dict]:
    """The shipped group (greedy on TRAIN) and, for comparison, the plain top-K groups."""

    def train_auroc(ids):
        s = group_scores(feats, ids)
        return score_auroc(s["train_pos"], s["train_neg"])

    # The plain top-K groups, for comparison: the max of raw activations lets a feature with a
    # large scale but a weak preference drown the others, so more is not always better.
    top_k = {}
    for k in GROUP_SIZES:
        ids = [r.feature for r in positive[:k]]
        s = group_scores(feats, ids)
        top_k[str(k)] = {
            "train_auroc": round(train_auroc(ids), 4),
            "test_auroc": round(score_auroc(s["test_pos"], s["test_neg"]), 4),
        }
    # The shipped group: greedy forward selection on TRAIN over the top candidates, in rank
    # order: a feature joins when the group's train AUROC rises by at least --min-gain.
    ids, cur = [positive[0].feature], positive[0].auroc
    for r in positive[1 : args.candidates]:
        if len(ids) >= max(GROUP_SIZES):
            break
        gain = train_auroc([*ids, r.feature])
        if gain >= cur + args.min_gain:
            ids, cur = [*ids, r.feature], gain
    return ids, top_k


def group_result(feats: dict, ids: list[int], top_k: dict, args) -> dict:
    """The group's AUROCs, its thresholds (max F1 and 5 % FPR, both chosen on TRAIN) and how
    each does on TEST."""
    s = group_scores(feats, ids)
    thr, train_f1 = max_f1_threshold(s["train_pos"], s["train_neg"])
    thr5 = fpr_threshold(s["train_neg"], 0.05)
    return {
        "size": len(ids),
        "features": ids,
        "selection": f"greedy over the top {args.candidates} (min gain {args.min_gain})",
        "top_k_groups": top_k,
        "train_auroc": round(score_auroc(s["train_pos"], s["train_neg"]), 4),
        "test_auroc": round(score_auroc(s["test_pos"], s["test_neg"]), 4),
        "threshold_max_f1": round(thr, 4),
        "train_f1": round(train_f1, 4),
        "test_at_threshold": metrics_at_threshold(s["test_pos"], s["test_neg"], thr),
        "threshold_5pct_fpr": round(thr5, 4),
        "test_at_5pct_fpr_threshold": metrics_at_threshold(s["test_pos"], s["test_neg"], thr5),
    }


def probe_results(acts: dict, args) -> dict:
    """The linear-probe baseline on the same pass, per pooling: fitted on TRAIN."""
    from steer.monitoring.probe import train_probe

    probes = {}
    for pooling in ("mean", "max"):
        res = {k: v[1][pooling] for k, v in acts.items()}
        probe = train_probe(res["train_pos"], res["train_neg"], l2=args.l2)
        logits = {k: probe.logits(v) for k, v in res.items()}
        correct = (logits["test_pos"] > 0).sum() + (logits["test_neg"] <= 0).sum()
        probes[pooling] = {
            "train_auroc": round(score_auroc(logits["train_pos"], logits["train_neg"]), 4),
            "test_auroc": round(score_auroc(logits["test_pos"], logits["test_neg"]), 4),
            "test_accuracy_at_0": round(
                float(correct / (len(res["test_pos"]) + len(res["test_neg"]))), 4
            ),
        }
    return probes


def run_task(name, pos_all, neg_all, lm, sae, args) -> dict:
    """Split, encode, pick the group and fit the probes for one task; all its numbers."""
    from steer.features.contrast import contrast

    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    data = write_splits(work, pos_all, neg_all, args)
    acts, encode_s = cached_encode(work, data, lm, sae, args)
    feats = {k: v[0] for k, v in acts.items()}
    positive = [r for r in contrast(feats["train_pos"], feats["train_neg"]) if r.direction == "+"]
    ids, top_k = pick_group(feats, positive, args)
    group = group_result(feats, ids, top_k, args)
    best = positive[0].feature
    t1 = time.perf_counter()
    probes = probe_results(acts, args)
    probe_s = time.perf_counter() - t1
    by_id = {r.feature: r for r in positive}
    return {
        "n_available": [len(pos_all), len(neg_all)],
        "n_train": [len(data["train_pos"]), len(data["train_neg"])],
        "n_test": [len(data["test_pos"]), len(data["test_neg"])],
        "encode_seconds": round(encode_s, 1),
        "probe_seconds": round(probe_s, 1),
        "group": group,
        "best_feature": {
            "feature": best,
            "train_auroc": round(positive[0].auroc, 4),
            "test_auroc": round(
                score_auroc(feats["test_pos"][:, best], feats["test_neg"][:, best]), 4
            ),
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


def render_recipe(name: str, res: dict) -> str:
    """The text of ``recipes/monitor-NAME.yaml`` for this task's result: the template in
    experiments/data/ filled in (a text template, not a YAML dump, so that the comments and
    layout of the shipped recipes are kept exactly)."""
    spec = TASKS[name]
    template = (DATA / RECIPE_TEMPLATE).read_text(encoding="utf-8")
    return template.format(
        title=spec["title"],
        k=res["group"]["size"],
        pos=spec["pos"],
        neg=spec["neg"],
        n_train=res["n_train"][0],
        test_auroc=res["group"]["test_auroc"],
        file=f"monitor-{name}.yaml",
        name=name,
        features=", ".join(str(f) for f in res["group"]["features"]),
        threshold=res["group"]["threshold_max_f1"],
    )


def write_recipe(name: str, res: dict) -> Path:
    """Write ``recipes/monitor-NAME.yaml``; its path."""
    from steer.io import atomic_write_text

    path = REPO / "recipes" / f"monitor-{name}.yaml"
    atomic_write_text(path, render_recipe(name, res))
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
    ap.add_argument(
        "--write-recipes", action="store_true", help="overwrite the shipped monitor recipes"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    from steer.sae.loading import load_sae_and_model

    t0 = time.perf_counter()
    folder, sae, lm = load_sae_and_model(args.sae)
    result = {"sae": folder.name, "args": vars(args), "tasks": {}}
    for name in args.tasks.split(","):
        pos, neg = MAKERS[name]()
        res = run_task(name, pos, neg, lm, sae, args)
        result["tasks"][name] = res
        if args.write_recipes:
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
