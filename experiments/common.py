"""Plumbing shared by the studies in experiments/: where the corpus and the data files are, and
the small text helpers used to build labelled splits. Study code, not part of the package.

Each study runs as ``python experiments/NAME.py``, which puts this folder first on
``sys.path``, so ``from common import ...`` finds this module.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# The text corpus the studies read (../shared/corpus from the repository; docs/training.md);
# set $STEER_CORPUS where it lives elsewhere.
CORPUS = Path(os.environ.get("STEER_CORPUS", "/work/shared/corpus"))


def load_data(name: str) -> Any:
    """A YAML file of ``experiments/data/`` (hand-written prompts, sentences, word lists)."""
    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space: split files
    hold one text per line."""
    return " ".join(text.split())


def dedupe(texts: list[str]) -> list[str]:
    """The non-empty texts, first occurrence of each only, in order (so that no text can land
    in both halves of a split)."""
    seen, out = set(), []
    for t in texts:
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text`` on one line, starting at a word boundary."""
    text = one_line(text)
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    return cut[cut.find(" ") + 1 :]


def split(
    texts: list[str], seed: int, n_train: int | None = None, n_test: int | None = None
) -> tuple[list[str], list[str]]:
    """A seeded shuffle of ``texts`` cut into (train, test): halves, or the first ``n_train``
    and the next ``n_test`` (exits when there are fewer texts than that)."""
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    if n_train is None or n_test is None:
        half = len(texts) // 2
        return texts[:half], texts[half:]
    if len(texts) < n_train + n_test:
        raise SystemExit(f"only {len(texts)} texts, need {n_train + n_test}")
    return texts[:n_train], texts[n_train : n_train + n_test]


def write_lines(path: Path, texts: list[str]) -> Path:
    """Write one text per line (the format ``steer features contrast --pos/--neg`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def request_sources() -> tuple[list[str], list[str], list[str]]:
    """``(red_team, alpaca, dolly)``: HH-RLHF harmless-base red-team first requests, Alpaca
    instructions (with their input) and Dolly open-QA questions, one line each, in file order."""
    red_team, dolly = [], []
    with open(CORPUS / "hh_rlhf_harmless_base_test.jsonl", encoding="utf-8") as fh:
        for line in fh:
            first = json.loads(line)["chosen"].split("\n\nAssistant:")[0]
            red_team.append(one_line(first.replace("\n\nHuman:", "", 1)))
    with open(CORPUS / "dolly15k_open_qa_subset.jsonl", encoding="utf-8") as fh:
        for line in fh:
            question = json.loads(line)["text"].split(" ### Assistant: ")[0]
            dolly.append(one_line(question.removeprefix("### Human:")))
    alpaca = [
        one_line(f"{rec['instruction']} {rec['input']}")
        for rec in json.loads((CORPUS / "alpaca_en_demo_1k.json").read_text(encoding="utf-8"))
    ]
    return red_team, alpaca, dolly
