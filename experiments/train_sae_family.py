"""Train a family of TopK SAEs for SmolLM2-135M-Instruct at several depths, with both cores.

Run under torchrun (one process per core; each uses one thread):

    STEER_CORPUS=$PWD/../shared/corpus OMP_NUM_THREADS=1 python -m torch.distributed.run \\
        --nproc-per-node 2 experiments/train_sae_family.py --work /tmp/steer-family

Stages, each resumable (run the same command again after an interruption):
1. collect: one forward pass per block of windows reads every layer's residual stream at
   once (to the deepest layer, not once per layer), the blocks shared out between the ranks
   (:func:`steer.training.shards.build_activation_caches`);
2. train: each layer in turn, both ranks on halves of every batch (DDP), with the
   explained variance on held-out WikiText-2 activations measured at ``--curve-points``
   points along the way (``<work>/curve-L<n>.json``: the tokens-vs-EV curve);
3. eval: ``steer sae eval``'s metrics (EV, L0, CE loss recovered, KL) on held-out
   WikiText-2, the layers split between the ranks; each SAE gets ``eval.json`` and a model
   card (``README.md``) in its folder.

The settings of every run come from ``recipes/train-smollm2-res12.yaml`` (data mix, context,
batch, learning rate, seed) with the layer, the token budgets and the folders replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("STEER_CORPUS", ROOT.parent / "shared" / "corpus"))
HELD_OUT = "wikitext2_raw_test.txt"
RECIPE = ROOT / "recipes" / "train-smollm2-res12.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/steer-family", help="Folder for caches and SAEs.")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24])
    ap.add_argument("--collect-tokens", type=int, default=1_048_576, help="Unique tokens.")
    ap.add_argument("--train-tokens", type=int, default=4_194_304, help="Per layer.")
    ap.add_argument("--d-sae", type=int, default=8192)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument(
        "--architecture",
        choices=["topk", "batchtopk"],
        default="topk",
        help="batchtopk: the SAEs go to <work>/L<n>-batchtopk, trained on the same caches",
    )
    ap.add_argument("--curve-points", type=int, default=8, help="Held-out EV checks per run.")
    ap.add_argument("--curve-tokens", type=int, default=16_384, help="Held-out tokens per check.")
    ap.add_argument("--eval-tokens", type=int, default=51_200)
    ap.add_argument("--ce-tokens", type=int, default=16_384)
    ap.add_argument("--stage", choices=["collect", "train", "eval", "all"], default="all")
    return ap.parse_args(argv)


def run_name(args: argparse.Namespace, layer: int) -> str:
    """The layer's folder under ``--work`` for this architecture (the caches stay in
    ``L<n>``, shared by every architecture)."""
    return f"L{layer}" if args.architecture == "topk" else f"L{layer}-{args.architecture}"


def layer_config(args: argparse.Namespace, layer: int):
    """The shipped SAE's recipe, moved to ``layer`` and the family's budgets and folders."""
    from steer.training.recipe import load_train_recipe

    work, name = Path(args.work), run_name(args, layer)
    os.environ.setdefault("STEER_CORPUS", str(CORPUS))
    return load_train_recipe(
        RECIPE,
        {
            "layer": layer,
            "architecture": args.architecture,
            "d_sae": args.d_sae,
            "k": args.k,
            "tokens": {"collect": args.collect_tokens, "train": args.train_tokens},
            "out": str(work / name / "sae"),
            "cache_dir": str(work / f"L{layer}" / "activations"),
            "checkpoint_dir": str(work / name / "checkpoints"),
            "metadata": {"trained_by": "experiments/train_sae_family.py"},
        },
    )


def collect(args, model, w) -> None:
    from tqdm.auto import tqdm

    from steer.training.run import training_windows
    from steer.training.shards import build_activation_caches

    cfgs = [layer_config(args, layer) for layer in args.layers]
    cfg = cfgs[0]
    windows = training_windows(cfg, model.tokenizer)
    done_before = all(finished_cache(model, c, windows) for c in cfgs)
    bar = tqdm(total=len(windows), desc="collect", unit="win", disable=not w.is_main)
    t0 = time.perf_counter()
    build_activation_caches(
        model,
        [c.hook() for c in cfgs],
        windows,
        [c.cache_dir for c in cfgs],
        world=w,
        outlier_factor=cfg.outlier_factor,
        batch_windows=cfg.batch_windows,
        progress=lambda done, total: bar.update(done - bar.n),
    )
    bar.close()
    if w.is_main and not done_before:  # a finished collection keeps the timing it had
        dt = time.perf_counter() - t0
        record(args, "collect", seconds=dt, tokens=windows.numel(), ranks=w.size)


def finished_cache(model, cfg, windows: torch.Tensor) -> bool:
    """Whether ``cfg``'s activation cache already holds every one of ``windows``."""
    from steer.training.cache import cache_complete, cache_fingerprint

    fp = cache_fingerprint(model.name, cfg.hook(), windows, cfg.outlier_factor)
    return cache_complete(cfg.cache_dir, fp)


def held_out(args, model, layer: int) -> torch.Tensor:
    """Kept residual-stream rows after ``layer`` for the first ``--curve-tokens`` of the
    held-out text (the same windows for every check of the curve)."""
    from steer.corpus.documents import read_documents
    from steer.corpus.windows import pack_windows
    from steer.model.positions import OutlierFilter, keep_mask, special_token_ids
    from steer.model.trace import layer_output

    texts = read_documents(CORPUS / HELD_OUT, model.tokenizer)
    windows = pack_windows(model.tokenizer, list(texts), 128)[: args.curve_tokens // 128]
    special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.long)
    outliers, rows = OutlierFilter(10.0), []
    for b0 in range(0, len(windows), 16):
        ids = windows[b0 : b0 + 16].long()
        hidden = layer_output(model, layer, ids)
        rows.append(hidden[keep_mask(ids, hidden, special, outliers)])
    return torch.cat(rows)


@torch.no_grad()
def held_out_ev(trainer, rows: torch.Tensor) -> float:
    """Explained variance of the trainer's current SAE on ``rows``, in its scaled space, as
    it trains: TopK per row; BatchTopK over each chunk of rows (its inference threshold
    exists only from the last quarter of training on)."""
    p, k = trainer.params, trainer.cfg.k
    x = rows * trainer.scale
    err2 = 0.0
    for chunk in x.split(4096):
        pre = (chunk - p["b_dec"]) @ p["W_enc"].t() + p["b_enc"]
        if trainer.architecture == "batchtopk":
            acts = pre.clamp_min(0)
            cut = acts.flatten().topk(k * len(chunk)).values[-1]
            recon = (acts * (acts >= cut)) @ p["W_dec"]
        else:
            vals, idx = pre.topk(k, dim=1)
            recon = torch.nn.functional.embedding_bag(
                idx, p["W_dec"], per_sample_weights=vals.clamp_min(0), mode="sum"
            )
        err2 += float((recon + p["b_dec"] - chunk).double().pow(2).sum())
    return 1.0 - err2 / float((x - x.mean(0)).double().pow(2).sum())


def train(args, model, w, layer: int) -> None:
    from steer.distributed import barrier
    from steer.io import atomic_write_text
    from steer.training.run import TrainingRun

    cfg = layer_config(args, layer)
    if (Path(cfg.out) / "cfg.json").is_file():
        return
    curve_file = Path(args.work) / f"curve-{run_name(args, layer)}.json"
    curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
    rows = held_out(args, model, layer) if w.is_main else None
    run = TrainingRun(cfg, model=model)
    run.load_state()
    every = max(1, cfg.total_steps // args.curve_points)

    def check(step: int, metrics: dict[str, float]) -> None:
        if w.is_main and (step % every == 0 or step == cfg.total_steps):
            ev = held_out_ev(run.trainer, rows)
            point = {"step": step, "tokens": step * cfg.batch_size, "held_out_ev": ev}
            curve.append({**point, "train_ev": metrics["ev"], "dead": metrics["dead"]})
            atomic_write_text(curve_file, json.dumps(curve, indent=1))

    t0 = time.perf_counter()
    start = run.trainer.step
    run.fit(check)
    if w.is_main:
        run.save()
        dt = time.perf_counter() - t0
        steps = cfg.total_steps - start
        record(
            args,
            f"train-{run_name(args, layer)}",
            seconds=dt,
            tokens=steps * cfg.batch_size,
            ranks=w.size,
        )
    barrier(w)


def evaluate(args, model, layer: int) -> None:
    """``eval.json`` and the model card for one trained SAE (skipped when already there)."""
    from steer.corpus.documents import read_documents
    from steer.io import atomic_write_text, file_sha256
    from steer.sae.formats import load_sae
    from steer.training.evaluate import evaluate_sae

    cfg = layer_config(args, layer)
    out = Path(cfg.out)
    if (out / "eval.json").is_file():
        return
    held = CORPUS / HELD_OUT
    metrics = evaluate_sae(
        model,
        load_sae(out),
        layer,
        read_documents(held, model.tokenizer),
        max_tokens=args.eval_tokens,
        ce_tokens=args.ce_tokens,
    )
    report = {
        "sae": out.name,
        "eval_data": {"path": HELD_OUT, "sha256": file_sha256(held)},
        "metrics": metrics,
        "command": f"steer sae eval {out} --data {HELD_OUT} --max-tokens {args.eval_tokens} "
        f"--ce-tokens {args.ce_tokens} --json",
    }
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2) + "\n")
    curve_file = Path(args.work) / f"curve-{run_name(args, layer)}.json"
    curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
    timings = json.loads((Path(args.work) / "timings.json").read_text())
    atomic_write_text(
        out / "README.md", model_card(cfg, metrics, curve, timings, args.curve_tokens)
    )


def model_card(
    cfg: Any, metrics: dict[str, Any], curve: list[dict], timings: dict, curve_tokens: int
) -> str:
    """Markdown for one SAE: data, tokens, hyper-parameters, held-out metrics, the EV curve."""
    data = "\n".join(f"| `{e.path.split('/')[-1]}` | {e.weight:g} |" for e in cfg.data)
    suffix = "" if cfg.architecture == "topk" else f"-{cfg.architecture}"
    train = timings.get(f"train-L{cfg.layer}{suffix}", {})
    collected = timings.get("collect", {}).get("tokens", cfg.tokens.collect)
    kept = json.loads((Path(cfg.out) / "cfg.json").read_text())["metadata"]["unique_tokens"]
    rows = "\n".join(
        f"| {p['tokens']:,} | {p['held_out_ev']:.4f} | {p['train_ev']:.4f} | {p['dead']:.4f} |"
        for p in curve
    )
    m = metrics
    if cfg.architecture == "batchtopk":
        title = "BatchTopK SAE (saved as JumpReLU)"
        arch = (
            f"BatchTopK (the batch's {cfg.k} x batch largest activations; AuxK loss, unit-norm "
            "decoder rows), saved as JumpReLU with one threshold: the mean batch cut-off of the "
            "last quarter of training"
        )
    else:
        title, arch = "TopK SAE", f"TopK (AuxK loss, unit-norm decoder rows), k = {cfg.k}"
    return f"""# SmolLM2-135M-Instruct, residual stream after block {cfg.layer}: {title}

A sparse autoencoder of the `steer` SmolLM2 family (`experiments/train_sae_family.py`),
SAELens format (`cfg.json`, `sae_weights.safetensors` stored as float16, computed in float32).

## Training

| setting | value |
|---|---|
| model | `{cfg.model}` |
| site | `blocks.{cfg.layer}.hook_resid_post` |
| architecture | {arch} |
| features (d_sae) | {cfg.d_sae:,} |
| tokens collected | {collected:,} in windows of {cfg.ctx_len} ({kept:,} positions kept) |
| tokens trained on | {cfg.total_steps * cfg.batch_size:,} ({cfg.total_steps:,} steps of {cfg.batch_size:,}) |
| learning rate | {cfg.lr:g} (Adam, {cfg.warmup_frac:g} warm-up, {cfg.decay_frac:g} linear decay) |
| seed | {cfg.seed} |
| processes | {train.get("ranks", 1)} (torchrun, DDP), {train.get("tok_per_s", "?")} tok/s |

Positions left out of training and evaluation: special tokens, position 0 of every window
(the attention sink) and norms above {cfg.outlier_factor:g}x the running median.

Data mix (share of the collected tokens; texts and licences in the corpus's `SOURCES.md`):

| source | weight |
|---|---|
{data}

## Held-out metrics (WikiText-2 test, {m["tokens"]:,} tokens; CE on {m["ce_tokens"]:,})

| explained variance | L0 | dead | CE loss recovered | CE clean / with SAE | KL (SAE) |
|---|---|---|---|---|---|
| {m["explained_variance"]:.4f} | {m["l0"]:.1f} | {m["dead_fraction"]:.4f} | {m["ce_loss_recovered"]:.4f} | {m["ce_loss_clean"]:.3f} / {m["ce_loss_sae"]:.3f} | {m["kl_sae"]:.3f} |

## Explained variance along training (held-out, first {curve_tokens:,} tokens of WikiText-2 test)

| tokens seen | held-out EV | train EV (batch) | dead |
|---|---|---|---|
{rows}
"""


def record(args, stage: str, **values) -> None:
    from steer.io import atomic_write_text

    path = Path(args.work) / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    seconds = values["seconds"]
    timings[stage] = {**values, "tok_per_s": round(values["tokens"] / seconds, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(timings, indent=2))
    print(f"[{stage}] {timings[stage]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from steer.distributed import barrier, quiet_unless_main, world
    from steer.model import load_model

    w = world()
    quiet_unless_main(w)
    model = load_model(device="cpu")
    if args.stage in ("collect", "all"):
        collect(args, model, w)
    if args.stage in ("train", "all"):
        for layer in args.layers:
            train(args, model, w, layer)
    if args.stage in ("eval", "all"):
        for layer in args.layers[w.rank :: w.size]:
            evaluate(args, model, layer)
    barrier(w)


if __name__ == "__main__":
    main()
