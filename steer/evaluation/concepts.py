"""The concept a recipe steers toward: its topic, its words, and texts about it and not.

Shipped concepts live in ``steer/data/eval/concepts.yaml``. Without ``--pos``/``--neg`` files,
a concept's positive texts are the sentences of the shipped corpus (``steer/data/corpus``)
that use one of its words and its negative texts those that use none: a lexicon-selected
contrast set, so the difference-of-means vector and the probe judge learn the concept as the
word list defines it (say so when reporting them).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from steer.corpus.shipped import shipped_corpus_dir
from steer.errors import SteerError
from steer.io import read_yaml

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
CONCEPTS_FILE = DATA / "concepts.yaml"
# Sentences of 6-60 words: shorter ones are headings and fragments, longer ones run-ons.
_WORDS = (6, 60)
MAX_TEXTS = 64


@dataclass(frozen=True)
class Concept:
    """A concept with the texts that define it for the vector and the probe."""

    name: str
    topic: str
    keywords: list[str]
    positive: list[str]
    negative: list[str]


def shipped_concepts() -> dict[str, dict]:
    """Name -> ``{"topic", "keywords"}`` for every concept shipped with steer."""
    return read_yaml(CONCEPTS_FILE, what="concepts file")


def corpus_sentences() -> list[str]:
    """The sentences of the shipped corpus's plain-text files, in a fixed order."""
    root = shipped_corpus_dir()
    sentences: list[str] = []
    # Not the red-team requests: concept texts should be ordinary prose.
    for path in sorted(p for p in root.rglob("*.txt") if p.stem != "requests-harmful"):
        text = path.read_text(encoding="utf-8").replace("<|endoftext|>", "\n")
        for part in re.split(r"(?<=[.!?])\s+|\n\s*\n", text):
            sentence = " ".join(part.split())
            if _WORDS[0] <= len(sentence.split()) <= _WORDS[1] and not sentence.startswith("="):
                sentences.append(sentence)
    return sentences


def mentions(text: str, words: list[str]) -> bool:
    """Whether ``text`` uses one of ``words`` as a whole word, in any case."""
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def mined_texts(words: list[str], *, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(positive, negative)``: up to :data:`MAX_TEXTS` shipped-corpus sentences that use one
    of ``words`` and as many that use none, sampled with ``seed``."""
    sentences = corpus_sentences()
    pos = [s for s in sentences if mentions(s, words)]
    neg = [s for s in sentences if not mentions(s, words)]
    rng = random.Random(seed)
    rng.shuffle(pos)
    rng.shuffle(neg)
    pos = pos[:MAX_TEXTS]
    return pos, neg[: max(len(pos), 1)] if pos else []


def load_concept(
    name: str,
    *,
    keywords: list[str] | None = None,
    topic: str | None = None,
    positive: list[str] | None = None,
    negative: list[str] | None = None,
) -> Concept:
    """The concept ``name``: a shipped one, or any name when ``keywords`` are given. Texts not
    given are mined from the shipped corpus; a concept left with no positive or no negative
    texts is a one-line SteerError."""
    known = shipped_concepts()
    entry = known.get(name, {})
    if not entry and not keywords:
        listed = ", ".join(sorted(known))
        raise SteerError(
            f"unknown concept {name!r} (shipped: {listed}); give --keywords for your own"
        )
    words = list(keywords or entry["keywords"])
    if not [w for w in words if w.strip()]:
        raise SteerError(f"concept {name!r} has no keywords")
    if positive is None or negative is None:
        mined_pos, mined_neg = mined_texts(words)
        positive = mined_pos if positive is None else positive
        negative = mined_neg if negative is None else negative
    if not positive:
        raise SteerError(f"concept {name!r} has no positive texts (none use its keywords)")
    if not negative:
        raise SteerError(f"concept {name!r} has no negative texts")
    return Concept(
        name=name,
        topic=topic or entry.get("topic") or name,
        keywords=words,
        positive=list(positive),
        negative=list(negative),
    )
