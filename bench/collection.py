"""Benchmark: activation collection at a layer of the bundled model (nnsight trace with an
early stop after the layer), against a plain transformers forward with hidden states.

    python bench/collection.py [--layer 12] [--tokens 32768] [--batch-windows 16]

Prints tokens/s of each and the ratio. Target on 2 CPU cores at layer 12: >= 2,000 tok/s.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from steer.corpus.windows import build_windows
from steer.model import load_model
from steer.training.activations import iter_activations

TEXT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "wikipedia_wiki_demo.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=32_768)
    parser.add_argument("--batch-windows", type=int, default=16)
    parser.add_argument("--data", type=Path, default=TEXT)
    args = parser.parse_args()

    model = load_model(device="cpu")
    windows = build_windows(model.tokenizer, [args.data], ctx_len=128, n_tokens=args.tokens)
    n_tokens = windows.numel()
    # warm-up
    next(iter_activations(model, args.layer, windows[: args.batch_windows]))

    t0 = time.perf_counter()
    kept = sum(
        len(b.acts)
        for b in iter_activations(model, args.layer, windows, batch_windows=args.batch_windows)
    )
    steer_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.inference_mode():
        for b0 in range(0, len(windows), args.batch_windows):
            ids = windows[b0 : b0 + args.batch_windows].long()
            model.hf(input_ids=ids, output_hidden_states=True).hidden_states[args.layer + 1]
    hf_s = time.perf_counter() - t0

    print(f"threads={torch.get_num_threads()} layer={args.layer} tokens={n_tokens} kept={kept}")
    print(f"steer collection (nnsight, stop after layer): {n_tokens / steer_s:8.0f} tok/s")
    print(f"plain HF forward, output_hidden_states:      {n_tokens / hf_s:8.0f} tok/s")
    print(f"speed-up: {hf_s / steer_s:.2f}x")


if __name__ == "__main__":
    main()
