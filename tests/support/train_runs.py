"""A small SAE training run on the tiny random Llama: its texts and its config, shared by
the training tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from steer.training.config import TrainConfig

_VOCAB = (
    "the cat sat on mat dog ran in park Paris is capital of France small model learns words "
    "once upon a time there was little girl who liked to play sun"
)
WORDS = _VOCAB.split()


def write_corpus(root: Path) -> Path:
    """A plain-text file (paragraphs) and a dolly-style chat JSONL under ``root``."""
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + "."

    paras = [" ".join(sentence() for _ in range(4)) for _ in range(150)]
    (root / "plain.txt").write_text("\n\n".join(paras))
    with open(root / "chat.jsonl", "w") as fh:
        for _ in range(60):
            rec = {"text": f"### Human: {sentence()} ### Assistant: {sentence()}"}
            fh.write(json.dumps(rec) + "\n")
    return root


def small_config(tmp_path: Path, corpus: Path, **over) -> TrainConfig:
    """A small run on the tiny model; ``train_tokens=`` sets ``tokens.train``."""
    base = dict(
        out=str(tmp_path / "sae"),
        data=[{"path": str(corpus / "plain.txt")}, {"path": str(corpus / "chat.jsonl")}],
        model="tiny-llama",
        layer=2,
        d_sae=128,
        k=8,
        ctx_len=32,
        tokens={"collect": 8192, "train": over.pop("train_tokens", 128 * 300)},
        batch_size=128,
        lr=2e-3,
        dead_tokens=4096,
        cache_dir=str(tmp_path / "cache"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=50,
        buffer_rows=1024,
    )
    if over.get("architecture") == "standard":
        del base["k"]  # a topk setting
    base.update(over)
    return TrainConfig(**base)
