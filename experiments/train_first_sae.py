"""Train steer's first bundled SAE: SmolLM2-135M-Instruct, residual stream after block 12,
TopK, 4,608 latents (8x), k=32, then evaluate it on held-out WikiText-2 (test split).

Sized for one CPU thread and ~40 minutes wall clock, collection + training + evaluation:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/train_first_sae.py

``--collect-only`` stops after the activation cache is built; a later run (same arguments)
finds the cache complete and goes on; ``--resume`` continues training from the last
checkpoint. Stage timings are kept in ``<work>/timings.json`` and copied into ``eval.json``.

``recipes/train-smollm2-res12.yaml`` describes the same run for ``steer train`` (tests check
that it gives the TrainConfig that :func:`build_config` builds for the shipped settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("STEER_CORPUS", "/work/shared/corpus"))
# (source, weight by tokens). Not labelled/ (evaluation sets), not hh_rlhf (harmful content
# on purpose), not wikitext2 (held out for evaluation).
MIX = (
    ("wikipedia_wiki_demo.txt", 0.25),
    ("gutenberg_nltk", 0.20),
    ("state_union", 0.10),
    ("tinystories_sample.txt", 0.10),
    ("dolly15k_open_qa_subset.jsonl", 0.10),
    ("alpaca_en_demo_1k.json", 0.10),
    ("lima_1k.json", 0.15),
)
HELD_OUT = "wikitext2_raw_test.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "steer/data/saes/smollm2-135m-res12-topk"))
    ap.add_argument("--work", default="/tmp/steer-first-sae", help="cache + checkpoints")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--collect-tokens", type=int, default=819_200)
    ap.add_argument("--train-tokens", type=int, default=2_201_600)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-tokens", type=int, default=51_200)
    ap.add_argument("--ce-tokens", type=int, default=16_384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage-dtype", default=None, help="e.g. float16 for a half-size file")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--resume", action="store_true")
    return ap.parse_args(argv)


def build_config(args: argparse.Namespace, corpus: Path = CORPUS):
    """The TrainConfig of a run with these arguments: the MIX from ``corpus``, cache and
    checkpoints under ``args.work``."""
    from steer.training.config import TrainConfig

    work = Path(args.work)
    return TrainConfig(
        out=args.out,
        data=[{"path": str(corpus / name), "weight": weight} for name, weight in MIX],
        layer=args.layer,
        d_sae=args.d_sae,
        k=args.k,
        tokens={"collect": args.collect_tokens, "train": args.train_tokens},
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        cache_dir=str(work / "activations"),
        checkpoint_dir=str(work / "checkpoints"),
        storage_dtype=args.storage_dtype,
        metadata={"trained_by": "experiments/train_first_sae.py", "threads": 1},
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from steer.corpus.documents import read_documents
    from steer.model import load_model
    from steer.training.evaluate import evaluate_sae
    from steer.training.run import collect_activations, train_sae

    work = Path(args.work)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    def mark(stage: str, seconds: float, **extra) -> None:
        timings[stage] = {"seconds": round(seconds, 1), **extra}
        work.mkdir(parents=True, exist_ok=True)
        timings_file.write_text(json.dumps(timings, indent=2))
        print(f"[{stage}] {timings[stage]}", flush=True)

    t0 = time.perf_counter()
    model = load_model(device="cpu")
    mark("load_model", time.perf_counter() - t0)

    cfg = build_config(args)

    # Stage 1: activations (the slow part: ~630 tok/s on one thread). train_sae would do the
    # same; running it here first gives the collection speed on its own.
    cache_meta = work / "activations" / "meta.json"
    already = cache_meta.is_file() and json.loads(cache_meta.read_text()).get("complete")
    t0 = time.perf_counter()
    windows, cache = collect_activations(cfg, model, progress=_progress(time.perf_counter()))
    if not already:
        dt = time.perf_counter() - t0
        mark(
            "collect",
            dt,
            tokens=windows.numel(),
            kept=cache.n_rows,
            tok_per_s=round(windows.numel() / dt, 1),
            stats=cache.meta["stats"],
        )
    if args.collect_only:
        return

    # Stage 2: training (the cache is complete, so train_sae goes straight to the optimizer).
    t0 = time.perf_counter()
    train_sae(cfg, model=model, resume=args.resume)
    dt = time.perf_counter() - t0
    mark(
        "train",
        dt,
        tokens=cfg.total_steps * cfg.batch_size,
        tok_per_s=round(cfg.total_steps * cfg.batch_size / dt, 1),
    )

    # Stage 3: held-out evaluation.
    from steer.io import file_sha256
    from steer.sae.formats import load_sae

    sae = load_sae(args.out)
    held = CORPUS / HELD_OUT
    t0 = time.perf_counter()
    metrics = evaluate_sae(
        model,
        sae,
        cfg.layer,
        read_documents(held, model.tokenizer),
        ctx_len=cfg.ctx_len,
        max_tokens=args.eval_tokens,
        ce_tokens=args.ce_tokens,
        progress=True,
    )
    mark("eval", time.perf_counter() - t0)
    total = sum(v["seconds"] for v in timings.values())
    report = {
        "sae": Path(args.out).name,
        "eval_data": {"path": str(held), "sha256": file_sha256(held)},
        "metrics": metrics,
        "timings": timings,
        "total_seconds": round(total, 1),
        "threads": torch.get_num_threads(),
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + " ".join([sys.executable, *sys.argv]),
    }
    from steer.io import atomic_write_text

    atomic_write_text(Path(args.out) / "eval.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["metrics"], indent=2))
    print(f"total {total / 60:.1f} min")


def _progress(start: float):
    last = [0.0]

    def report(done: int, total: int, stats) -> None:
        now = time.perf_counter()
        if now - last[0] > 60 or done == total:
            last[0] = now
            rate = stats.tokens / max(1e-9, now - start)
            print(f"collect {done}/{total} windows, {rate:.0f} tok/s", flush=True)

    return report


if __name__ == "__main__":
    main()
