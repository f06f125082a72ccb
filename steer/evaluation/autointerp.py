"""Auto-interpretability: explain a feature from its contexts in the feature index with an
explainer model, and score the explanation by detection and fuzzing (delphi's methods, Paulo
et al. 2024) with a scorer model. Models are anything the ``llm`` library knows (``pip
install 'steer[llm]'``); ``steer-smollm2`` runs the bundled model offline.

* explain: the feature's top contexts with its active tokens marked ``<<like this>>``; the
  model names what they share.
* detection: the scorer sees the explanation and one unmarked context at a time, half where
  the feature fires (its top contexts and quantile samples) and half where it does not
  (contexts of other features, drawn at random; the feature's own activation there is not
  known but rarely above zero for a sparse feature), and answers whether the feature fires.
* fuzzing: contexts where the feature fires, once with its active tokens marked and once
  with as many other tokens marked; the scorer answers whether the marks fit the explanation.

Each score is balanced accuracy: 0.5 is chance, 1.0 is perfect.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from steer.errors import SteerError
from steer.features.store import Context, FeatureIndex

EXPLAIN = (
    "Below are text excerpts where one feature of a language model is active. The tokens where "
    "it is active are marked <<like this>>.\n\n{examples}\n\nIn a few words, what do the marked "
    "tokens have in common? Answer with the short description only."
)
DETECT = (
    "A feature of a language model is described as: {explanation}\n\nText: {text}\n\n"
    "Does this text contain what the description says? Answer yes or no."
)
FUZZ = (
    "A feature of a language model is described as: {explanation}\n\nIn the text below some "
    "tokens are marked <<like this>>.\n\nText: {text}\n\nDo the marked tokens match the "
    "description? Answer yes or no."
)


def context_text(ctx: Context, marked: set[int] | None = None) -> str:
    """The context's text, the tokens at ``marked`` wrapped in ``<<>>``."""
    marked = marked or set()
    parts = [f"<<{t}>>" if i in marked else t for i, t in enumerate(ctx.tokens)]
    return "".join(parts).replace("\n", " ").strip()


def active(ctx: Context) -> set[int]:
    """Positions where the feature is active in ``ctx``."""
    return {i for i, a in enumerate(ctx.acts) if a > 0}


def read_yes(reply: str) -> bool | None:
    """The first yes or no in ``reply`` (None: neither)."""
    found = re.search(r"\b(yes|no)\b", reply or "", flags=re.IGNORECASE)
    return None if found is None else found.group(1).lower() == "yes"


def balanced_accuracy(labels: list[bool], answers: list[bool | None]) -> float:
    """Mean of the true-positive and true-negative rates (an unreadable answer is wrong)."""
    rates = []
    for side in (True, False):
        hits = [a == side for lab, a in zip(labels, answers, strict=True) if lab == side]
        if hits:
            rates.append(sum(hits) / len(hits))
    return sum(rates) / len(rates) if rates else 0.5


@dataclass
class Scored:
    """An explanation's scores, and how many items each one read."""

    detection: float
    fuzzing: float
    n_detection: int
    n_fuzzing: int
    unreadable: int

    def to_dict(self) -> dict[str, Any]:
        """Rounded for JSON."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}


def firing(index: FeatureIndex, feature: int) -> list[Context]:
    """The feature's contexts in the index where it fires: top contexts, then samples."""
    record = index.feature(feature)
    found = [c for c in [*record.contexts, *(record.samples or [])] if active(c)]
    if not found:
        raise SteerError(f"feature {feature} never fires in the index: nothing to explain")
    return found


def others(index: FeatureIndex, feature: int, n: int, rng: random.Random) -> list[Context]:
    """Top contexts of ``n`` other features of the index, drawn at random."""
    ids = [i for i in range(index.d_sae) if i != feature]
    out: list[Context] = []
    for fid in rng.sample(ids, min(len(ids), 8 * n)):
        if len(out) >= n:
            break
        if index.has(fid):
            contexts = index.feature(fid).contexts
            if contexts:
                out.append(rng.choice(contexts))
    return out


def explain(index: FeatureIndex, feature: int, ask, *, examples: int = 10) -> str:
    """The explainer's description of ``feature`` from its strongest contexts (``ask`` sends
    one prompt and returns the reply)."""
    return explain_contexts(firing(index, feature)[:examples], ask)


def explain_contexts(contexts: list[Context], ask) -> str:
    """The explainer's description of what the marked tokens of ``contexts`` share."""
    text = "\n".join(f"{i + 1}. {context_text(c, active(c))}" for i, c in enumerate(contexts))
    reply = (ask(EXPLAIN.format(examples=text)) or "").strip()
    line = next((ln.strip(" -*\"'") for ln in reply.splitlines() if ln.strip()), "")
    if not line:
        raise SteerError("the explainer gave no explanation")
    return line[:200]


def score(
    index: FeatureIndex, feature: int, explanation: str, ask, *, n: int = 10, seed: int = 0
) -> Scored:
    """Detection and fuzzing scores of ``explanation`` for ``feature`` on up to ``n``
    firing contexts (and as many negatives each)."""
    rng = random.Random(seed)
    pos = firing(index, feature)
    pos = rng.sample(pos, min(n, len(pos)))
    return score_contexts(pos, others(index, feature, len(pos), rng), explanation, ask, rng)


def score_contexts(
    pos: list[Context], neg: list[Context], explanation: str, ask, rng: random.Random
) -> Scored:
    """Detection on ``pos`` (where the direction fires) against ``neg``, and fuzzing on
    ``pos``, of ``explanation`` by the scorer ``ask``."""
    items = [(c, True) for c in pos] + [(c, False) for c in neg]
    det = [
        read_yes(ask(DETECT.format(explanation=explanation, text=context_text(c))))
        for c, _ in items
    ]
    fuzz_items: list[tuple[str, bool]] = []
    for c in pos:
        on = active(c)
        off = [i for i in range(len(c.tokens)) if i not in on]
        wrong = set(rng.sample(off, min(len(on), len(off))))
        fuzz_items += [(context_text(c, on), True), (context_text(c, wrong), False)]
    fuzz = [read_yes(ask(FUZZ.format(explanation=explanation, text=t))) for t, _ in fuzz_items]
    return Scored(
        detection=balanced_accuracy([lab for _, lab in items], det),
        fuzzing=balanced_accuracy([lab for _, lab in fuzz_items], fuzz),
        n_detection=len(items),
        n_fuzzing=len(fuzz_items),
        unreadable=sum(a is None for a in det + fuzz),
    )


def asker(model_id: str):
    """``ask(prompt) -> reply`` for the ``llm`` model ``model_id``, checked as the llm judge
    checks it (installed, known, keyed)."""
    from steer.evaluation.llm_models import llm_model

    model = llm_model(model_id)

    def ask(prompt: str) -> str:
        return model.prompt(prompt, stream=False).text()

    return ask
