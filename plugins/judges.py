"""Built-in offline judges for ``steer eval``: ``lexicon`` and ``probe``. Neither needs a
network.

* ``lexicon``: 1 if the completion uses one of the concept's words (whole words, any case),
  else 0; the mean over prompts is the share of completions that mention the concept.
  ``--judge lexicon:word1,word2`` gives the words instead of the concept's list.
* ``probe``: the probability a logistic-regression probe gives the completion of being about
  the concept, read from the UNSTEERED model's residual stream of the completion at the
  recipe's layer (so the steering edit itself cannot inflate it). ``--judge probe`` trains the
  probe on the concept's positive and negative texts; ``--judge probe:FILE`` loads one from
  ``steer probe train``.
"""

import math
import re

from steer import JudgeType, SteerError, hookimpl


def keyword_pattern(words):
    """A regex that finds any of ``words`` as a whole word, in any case."""
    words = [w.strip() for w in words if w.strip()]
    if not words:
        raise SteerError("the lexicon judge has no words to look for")
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def make_lexicon(ctx, arg):
    pattern = keyword_pattern(arg.split(",") if arg else ctx.keywords)

    def score(prompts, completions):
        return [1.0 if pattern.search(text) else 0.0 for text in completions]

    return score


def make_probe(ctx, arg):
    # A file is read now (a bad one fails before the model loads); a probe to train is
    # trained on first use, once the model is there.
    probes = [ctx.load_probe(arg)] if arg else []
    checked = []

    def score(prompts, completions):
        if not probes:
            probes.append(ctx.train_probe())
        probe = probes[0]
        if arg and not checked:
            ctx.check_probe(probe, where=arg)
            checked.append(True)
        # An empty completion says nothing about the concept: 0, not the probe's prior.
        kept = [i for i, text in enumerate(completions) if text.strip()]
        out = [0.0] * len(completions)
        if kept:
            logits = probe.logits(ctx.residuals([completions[i] for i in kept])).tolist()
            for i, logit in zip(kept, logits, strict=True):
                out[i] = 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))
        return out

    return score


@hookimpl
def steer_register_judges(register):
    register(
        JudgeType(
            "lexicon",
            make_lexicon,
            "1 if the completion uses one of the concept's words (lexicon:w1,w2 for your own)",
        )
    )
    register(
        JudgeType(
            "probe",
            make_probe,
            "probability from a residual probe on the unsteered model (probe:FILE to load one)",
        )
    )
