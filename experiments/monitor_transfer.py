"""Safety monitors across distributions: fit on some labelled sets, test on another.

Two concepts, three sources each (files under ``$STEER_CORPUS/labelled`` and
``$STEER_CORPUS/labelled/transfer``; sources, commits and licences in docs/monitoring.md):

* ``toxicity``: ``davidson`` (tweets: hate or offensive vs neither; slurs, informal
  spelling), ``toxigen`` (ToxiGen's human-provided statements about 13 groups: hateful vs
  neutral; implicit, standard spelling), ``hatecheck`` (HateCheck's test cases: hateful vs
  non-hateful, the latter including reclaimed slurs, profanity and counter-speech).
* ``harmful-requests``: ``hh-redteam`` (HH-RLHF red-team first turns vs Alpaca and Dolly
  requests), ``xstest`` (XSTest: unsafe prompts vs safe prompts that only sound unsafe),
  ``advbench`` (AdvBench harmful behaviours vs LIMA's human-written requests).

Each set (at most ``--per-class`` texts per class, seeded) is written as a labelled JSONL
under ``--work`` (the input of ``steer monitor eval``) and goes through SmolLM2 once (up to
layer 12, shipped SAE; ``--sae`` names another, at its own layer); the pass is cached per set
under ``--work/cache``. Then, per concept,
every detector kind of :mod:`steer.monitoring.detectors` is fitted leave-one-dataset-out
(fit on two sets, test on the third) and on each set alone (tested on each other set) by
:func:`steer.monitoring.transfer.cross_evaluate`: AUROC with a bootstrap CI, TPR and
precision at 5 % FPR, and the fit set's 5 % FPR threshold carried over.

Texts are never printed: only counts and numbers.

    OMP_NUM_THREADS=1 python experiments/monitor_transfer.py
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import CORPUS, DATA, REPO, dedupe, one_line, request_sources

LABELLED = CORPUS / "labelled"
TRANSFER = LABELLED / "transfer"
# The kinds a recipe's monitor can run during generation (the dense probe reads the residual
# stream, which monitors do not see): the shipped recipe takes the best of these.
RECIPE_KINDS = ("group", "consistent", "sparse-token")
RECIPE_TEMPLATE = "monitor_transfer_recipe.yaml.template"
POOLED_KINDS = ("group", "consistent", "sparse", "dense")
# The groups shipped before this study (experiments/monitor_safety.py: contrast on one
# source, Davidson tweets or HH-RLHF vs Alpaca/Dolly), judged here on every set's test half.
PREVIOUS = {
    "toxicity": [1935, 2553, 2221, 6003],
    "harmful-requests": [3693, 2876, 4013, 4501, 3996, 4395],
}
SHIPPED = "smollm2-135m-res12-topk"
CONCEPTS = {
    "toxicity": ("davidson", "toxigen", "hatecheck"),
    "harmful-requests": ("hh-redteam", "xstest", "advbench"),
}


def davidson() -> tuple[list[str], list[str]]:
    """Davidson et al. tweets: (hate speech or offensive, neither)."""
    pos, neg = [], []
    with open(LABELLED / "davidson_hate_offensive_tweets.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            (neg if row["class"] == "2" else pos).append(one_line(row["tweet"]))
    return pos, neg


def toxigen() -> tuple[list[str], list[str]]:
    """ToxiGen statements: (hateful, neutral)."""
    pos, neg = [], []
    with open(TRANSFER / "toxigen_statements.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            (pos if rec["label"] == 1 else neg).append(one_line(rec["text"]))
    return pos, neg


def hatecheck() -> tuple[list[str], list[str]]:
    """HateCheck test cases: (hateful, non-hateful)."""
    pos, neg = [], []
    with open(TRANSFER / "hatecheck_test_suite_cases.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            (pos if row["label_gold"] == "hateful" else neg).append(one_line(row["test_case"]))
    return pos, neg


def hh_redteam() -> tuple[list[str], list[str]]:
    """HH-RLHF red-team first turns vs Alpaca instructions and Dolly questions (half each)."""
    pos, alpaca, dolly = request_sources()
    # Interleaved, so any cut of the list keeps half of each source.
    neg = [t for pair in zip(dedupe(alpaca), dedupe(dolly), strict=False) for t in pair]
    return pos, neg


def xstest() -> tuple[list[str], list[str]]:
    """XSTest prompts: (unsafe, safe)."""
    pos, neg = [], []
    with open(TRANSFER / "xstest_prompts.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            (pos if row["label"] == "unsafe" else neg).append(one_line(row["prompt"]))
    return pos, neg


def advbench() -> tuple[list[str], list[str]]:
    """AdvBench harmful behaviours vs the single-turn LIMA instructions."""
    with open(TRANSFER / "advbench_harmful_behaviors.csv", newline="", encoding="utf-8") as fh:
        pos = [one_line(row["goal"]) for row in csv.DictReader(fh)]
    lima = json.loads((CORPUS / "lima_1k.json").read_text(encoding="utf-8"))
    neg = [one_line(f"{r['instruction']} {r['input']}") for r in lima if not r["history"]]
    return pos, neg


SOURCES = {
    "davidson": davidson,
    "toxigen": toxigen,
    "hatecheck": hatecheck,
    "hh-redteam": hh_redteam,
    "xstest": xstest,
    "advbench": advbench,
}


def write_set(name: str, work: Path, per_class: int, seed: int) -> Path:
    """The set's labelled JSONL under ``work``: de-duplicated (a text in both classes is
    dropped), at most ``per_class`` texts per class, seeded."""
    from steer.io import atomic_write_text

    pos, neg = (dedupe(x) for x in SOURCES[name]())
    both = set(pos) & set(neg)
    rng = random.Random(seed)
    recs = []
    for label, texts in ((1, pos), (0, neg)):
        texts = [t for t in texts if t not in both]
        for t in rng.sample(texts, min(per_class, len(texts))):
            recs.append({"text": t, "label": label})
    path = work / "sets" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in recs))
    return path


def read_cache(work: Path, name: str):
    """``(key, EncodedSet)`` of the set ``name`` cached under ``work``, or ``None``."""
    from steer.monitoring.labelled import EncodedSet

    cache = work / "cache" / f"{name}.pt"
    if not cache.is_file():
        return None
    saved = torch.load(cache)
    return saved["key"], EncodedSet(**saved["enc"])


def cached_encode(name: str, path: Path, lm, sae, args):
    """The set's :class:`~steer.monitoring.labelled.EncodedSet`, from the cache when the
    file, ``ctx_len`` and SAE are the same."""
    from steer.io import file_sha256
    from steer.monitoring.labelled import encode_labelled, read_labelled

    key = [file_sha256(path), args.ctx_len, args.sae]
    saved = read_cache(Path(args.work), name)
    if saved is not None and saved[0] == key:
        return saved[1]
    cache = Path(args.work) / "cache" / f"{name}.pt"
    data = read_labelled(path, name=name)
    t0 = time.perf_counter()
    enc = encode_labelled(
        lm, sae, data.texts, data.labels, ctx_len=args.ctx_len, batch=args.batch, desc=name
    )
    print(f"{name}: {len(data.texts)} texts encoded in {time.perf_counter() - t0:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "enc": dataclasses.asdict(enc)}, cache)
    return enc


def joint_encodings(works: list[str], names: list[str]) -> dict:
    """Each set's encodings that earlier runs cached (one ``--work`` per SAE), joined side
    by side (:func:`steer.monitoring.labelled.join_sites`): feature ``f`` of the i-th work's
    SAE is column ``i * d_sae + f`` when the SAEs have one width."""
    from steer.monitoring.labelled import join_sites

    out = {}
    for name in names:
        keys, parts = [], []
        for work in works:
            saved = read_cache(Path(work), name)
            if saved is None:
                raise SystemExit(f"{work}: {name} not encoded; run with --work {work} first")
            keys.append(tuple(saved[0][:2]))  # the set file's sha256 and ctx_len
            parts.append(saved[1])
        if len(set(keys)) > 1:
            raise SystemExit(f"{name}: the --joint works encoded other files or ctx_len")
        out[name] = join_sites(parts)
    return out


def evaluate_concept(concept: str, encoded: dict, args) -> dict:
    """Every detector kind, leave one dataset out, on one concept's sets; rows and table."""
    from steer.monitoring.detectors import KINDS
    from steer.monitoring.transfer import cross_evaluate, table

    sets = {name: encoded[name] for name in CONCEPTS[concept]}
    t0 = time.perf_counter()
    rows = cross_evaluate(
        sets,
        # Joined sites have no common tokens: the per-token kind cannot read them.
        kinds=POOLED_KINDS if args.joint else KINDS,
        fpr=args.fpr,
        n_boot=args.bootstrap,
        seed=args.seed,
        single=not args.no_single,
        l1=args.l1,
        progress=lambda label: print(f"  {concept}: fitting {label}", flush=True),
    )
    print(f"{concept}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    return {"rows": [r.as_dict() for r in rows], "table": table(rows)}


def previous_group(concept: str, encoded: dict, args) -> dict:
    """The previously shipped group's AUROC (bootstrap CI) on each set's test half: the
    halves ``cross_evaluate`` tests on. Its fit data overlap the fit halves of its own
    source, so only the other sets are out of its distribution."""
    from steer.monitoring.thresholds import score_auroc
    from steer.monitoring.transfer import bootstrap_auroc, split_set

    out = {}
    for name in CONCEPTS[concept]:
        test = split_set(encoded[name], name, seed=args.seed)[1]
        s = test.sae_max[:, PREVIOUS[concept]].max(dim=1).values
        pos, neg = s[test.labels], s[~test.labels]
        ci = bootstrap_auroc(pos, neg, n_boot=args.bootstrap, seed=args.seed)
        out[name] = {"auroc": round(score_auroc(pos, neg), 4), "ci": [round(c, 4) for c in ci]}
    return out


def mean_held_out(rows: list[dict], kind: str) -> float:
    """The mean held-out AUROC of ``kind`` over the concept's sets."""
    vals = [r["auroc"] for r in rows if r["kind"] == kind and r["mode"] == "held-out"]
    return sum(vals) / len(vals)


def ship_recipe(concept: str, encoded: dict, res: dict, args) -> dict:
    """Fit the best-transferring recipe kind on every set of the concept (whole) and write
    ``recipes/monitor-CONCEPT.yaml``; what was written."""
    from steer.io import atomic_write_text
    from steer.monitoring.detectors import fit_detector
    from steer.monitoring.thresholds import fpr_threshold

    best = max(RECIPE_KINDS, key=lambda k: mean_held_out(res["rows"], k))
    sets = [encoded[name] for name in CONCEPTS[concept]]
    det = fit_detector(best, sets, l1=args.l1)
    neg = torch.cat([det.score(s)[~s.labels] for s in sets])
    threshold = round(fpr_threshold(neg, args.fpr), 4)
    held = [r for r in res["rows"] if r["kind"] == best and r["mode"] == "held-out"]
    dense = {
        r["test"]: r["auroc"]
        for r in res["rows"]
        if r["kind"] == "dense" and r["mode"] == "held-out"
    }
    lines = [
        f"#   held out {r['test']}: AUROC {r['auroc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        f" (dense residual probe: {dense[r['test']]:.3f})"
        for r in held
    ]
    if best == "sparse-token":
        settings = (
            "    plugin: linear\n"
            f"    weights: [{', '.join(f'{w:.5g}' for w in det.weights)}]\n"
            f"    bias: {det.bias:.5g}\n"
        )
    else:
        settings = ""
    text = (
        (DATA / RECIPE_TEMPLATE)
        .read_text(encoding="utf-8")
        .format(
            title=TITLES[concept],
            kind=best,
            sets=", ".join(CONCEPTS[concept]),
            k=len(det.features),
            fpr=args.fpr,
            mean=mean_held_out(res["rows"], best),
            dense_mean=mean_held_out(res["rows"], "dense"),
            held_out="\n".join(lines),
            file=f"monitor-{concept}.yaml",
            name=concept,
            features=", ".join(str(f) for f in det.features),
            settings=settings,
            threshold=threshold,
        )
    )
    path = REPO / "recipes" / f"monitor-{concept}.yaml"
    atomic_write_text(path, text)
    return {"recipe": str(path.relative_to(REPO)), "kind": best, "features": det.features,
            "threshold": threshold}  # fmt: skip


TITLES = {"toxicity": "hateful or toxic text", "harmful-requests": "harmful requests"}


def evaluate_all(encoded: dict, args) -> None:
    """Evaluate every concept, print its table, write the results JSON (and recipes)."""
    out = Path(args.out or Path(args.work) / "results.json")
    result = {"args": vars(args), "concepts": {}}
    for concept in args.concepts.split(","):
        res = evaluate_concept(concept, encoded, args)
        sizes = {n: [int(encoded[n].labels.sum()), int((~encoded[n].labels).sum())]
                 for n in CONCEPTS[concept]}  # fmt: skip
        res["sizes"] = sizes
        if (
            args.sae == SHIPPED and not args.joint
        ):  # feature ids of the shipped SAE mean nothing in another
            res["previous_group"] = {"features": PREVIOUS[concept],
                                     "test": previous_group(concept, encoded, args)}  # fmt: skip
        if not args.no_recipes:
            res["shipped"] = ship_recipe(concept, encoded, res, args)
        result["concepts"][concept] = res
        print(f"\n{concept} (pos, neg per set: {sizes}):\n{res['table']}\n")
        if "previous_group" in res:
            print(f"previously shipped group on each test half: {res['previous_group']['test']}")
        if "shipped" in res:
            print(f"wrote {res['shipped']['recipe']} ({res['shipped']['kind']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sae",
        default=SHIPPED,
        help="shipped SAE name or SAE folder (e.g. /work/family/L6/sae; give each its own "
        "--work); the previous groups are judged only on the shipped SAE",
    )
    ap.add_argument("--per-class", type=int, default=500, help="texts per class and set")
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples for the CIs")
    ap.add_argument("--fpr", type=float, default=0.05, help="the fixed false-positive rate")
    ap.add_argument("--l1", type=float, default=0.03, help="L1 penalty of the sparse probe")
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--work", default="/tmp/issue18")
    ap.add_argument("--out", default=None, help="results JSON (default: WORK/results.json)")
    ap.add_argument(
        "--sets",
        default=None,
        metavar="DIR",
        help="read the sets from DIR/NAME.jsonl (e.g. an earlier run's WORK/sets) instead of "
        "building them from the corpus; --per-class and --seed then do not apply",
    )
    ap.add_argument(
        "--no-single",
        action="store_true",
        help="skip the rows fitted on one other set alone (about half the fitting time)",
    )
    ap.add_argument("--encode-only", action="store_true", help="write and encode the sets only")
    ap.add_argument("--no-recipes", action="store_true", help="leave recipes/ alone")
    ap.add_argument(
        "--joint",
        default=None,
        metavar="WORK,WORK,...",
        help="no model pass: join the encodings earlier runs cached under these --work folders "
        "(one per SAE, e.g. one per layer) and fit the pooled kinds on all their features at "
        "once (writes no recipe; --work takes the results)",
    )
    args = ap.parse_args()
    if args.joint:
        args.no_recipes = True  # a joint detector reads several SAEs: no monitor recipe has it
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    from steer.sae.loading import load_sae_and_model

    work = Path(args.work)
    if args.joint:
        names = [n for c in args.concepts.split(",") for n in CONCEPTS[c]]
        evaluate_all(joint_encodings(args.joint.split(","), names), args)
        return
    _, sae, lm = load_sae_and_model(args.sae)
    encoded = {}
    for concept in args.concepts.split(","):
        for name in CONCEPTS[concept]:
            if args.sets:  # written before: the same texts for every SAE
                path = Path(args.sets) / f"{name}.jsonl"
            else:
                path = write_set(name, work, args.per_class, args.seed)
            encoded[name] = cached_encode(name, path, lm, sae, args)
    if args.encode_only:
        return
    evaluate_all(encoded, args)


if __name__ == "__main__":
    main()
