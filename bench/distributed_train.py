"""Benchmark: SAE training on SmolLM2 (layer 12, TopK 8,192 x k=64, batch 2,048) with one
process and with two under torchrun, side by side in one run, in alternating rounds.

    python bench/distributed_train.py [--rounds 2] [--steps 40] [--tokens 16384]

Each arm runs the same worker (this file with ``--worker``): collect ``--tokens`` activations
into a fresh cache (the ranks share the forward passes) and train ``--steps`` steps on them
(the ranks split every batch; DDP averages the gradients). Arms: one process on one torch
thread, one process on two threads, two processes of one thread each. Prints tokens/s of
collection and training for each arm and the ratio to the one-process, one-thread arm.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "wikipedia_wiki_demo.txt"
ARMS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1", 2, 1))


def worker(args: argparse.Namespace) -> None:
    """One arm: collect, then train; rank 0 writes the timings to ``--result``."""
    import torch

    from steer.distributed import barrier, quiet_unless_main, world
    from steer.model import load_model
    from steer.training.config import TrainConfig
    from steer.training.run import TrainingRun

    w = world()
    quiet_unless_main(w)
    model = load_model(device="cpu")
    work = Path(args.work)
    cfg = TrainConfig(
        layer=12,
        d_sae=8192,
        k=64,
        data=[{"path": str(args.data)}],
        tokens={"collect": args.tokens, "train": args.steps * 2048},
        batch_size=2048,
        out=str(work / "sae"),
        cache_dir=str(work / "cache"),
        checkpoint_dir=str(work / "ckpt"),
        checkpoint_every=10**6,
        buffer_rows=8192,
    )
    barrier(w)
    t0 = time.perf_counter()
    run = TrainingRun(cfg, model=model, progress=False)  # collects the cache
    barrier(w)
    t1 = time.perf_counter()
    run.fit()
    barrier(w)
    t2 = time.perf_counter()
    if w.is_main:
        result = {
            "collect_tok_s": args.tokens / (t1 - t0),
            "train_tok_s": cfg.total_steps * cfg.batch_size / (t2 - t1),
            "threads": torch.get_num_threads(),
        }
        Path(args.result).write_text(json.dumps(result))


def run_arm(args: argparse.Namespace, procs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        launch = [sys.executable]
        if procs > 1:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            launch += ["-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
            launch += ["--master-port", str(port)]
        cmd = [*launch, __file__, "--worker", "--work", tmp, "--result", str(result)]
        cmd += ["--steps", str(args.steps), "--tokens", str(args.tokens), "--data", str(args.data)]
        subprocess.run(cmd, env=env, check=True, cwd=ROOT, capture_output=True)
        return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="Training steps of 2,048 per arm.")
    ap.add_argument("--tokens", type=int, default=16_384, help="Tokens collected per arm.")
    ap.add_argument("--data", type=Path, default=CORPUS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in ARMS}
    for r in range(args.rounds):
        for name, procs, threads in ARMS:
            runs[name].append(run_arm(args, procs, threads))
            print(f"round {r + 1}: {name}: {runs[name][-1]}", flush=True)
    base = {key: statistics.median(x[key] for x in runs[ARMS[0][0]]) for key in runs[ARMS[0][0]][0]}
    print("\n| arm | collect tok/s | ratio | train tok/s | ratio |\n|---|---|---|---|---|")
    for name in runs:
        c = statistics.median(x["collect_tok_s"] for x in runs[name])
        t = statistics.median(x["train_tok_s"] for x in runs[name])
        print(
            f"| {name} | {c:,.0f} | {c / base['collect_tok_s']:.2f}x "
            f"| {t:,.0f} | {t / base['train_tok_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
