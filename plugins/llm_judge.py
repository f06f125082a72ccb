"""Built-in judge ``llm``: AxBench's three 0-2 ratings (concept, instruction-following,
fluency) from any model the ``llm`` library knows, combined by their harmonic mean (0 when any
is 0), so a completion scores only if it is about the concept, answers the prompt and reads
well.

``--judge llm:MODEL`` names an ``llm`` model id or alias (OpenAI, Anthropic, Ollama, a local
GGUF: whatever ``llm models`` lists); ``--judge llm`` uses ``steer-smollm2``, the bundled
SmolLM2 through transformers (offline, and weak as a judge). Needs ``pip install
'steer[llm]'``. A model that is unknown or lacks its key is one line before any arm runs; a
rating the model's reply does not hold counts as 0 and is reported.
"""

import logging
import re

from steer import JudgeType, hookimpl, llm_model

log = logging.getLogger(__name__)
DEFAULT_MODEL = "steer-smollm2"

ASK = {
    "concept": (
        "You are a strict, impartial judge. Does the text below talk about {topic}? Judge only "
        "whether {topic} is clearly part of it, not its grammar.\n\nText: {text}\n\n"
        "Rate from 0 to 2: 0 = {topic} is absent, 1 = only a passing or awkward mention, "
        "2 = {topic} is clearly and naturally part of the text. "
        "End your answer with the rating written exactly as Rating: [[N]]"
    ),
    "instruction": (
        "You are a strict, impartial judge. Does the response below answer the request, "
        "whatever else it talks about?\n\nRequest: {prompt}\n\nResponse: {text}\n\n"
        "Rate from 0 to 2: 0 = it ignores the request, 1 = it answers it partly, "
        "2 = it answers it. End your answer with the rating written exactly as Rating: [[N]]"
    ),
    "fluency": (
        "You are a strict, impartial judge. Is the text below fluent, well-formed English? "
        "Ignore what it is about.\n\nText: {text}\n\n"
        "Rate from 0 to 2: 0 = not fluent (broken, repetitive), 1 = somewhat fluent, "
        "2 = fluent. End your answer with the rating written exactly as Rating: [[N]]"
    ),
}
# `[[N]]` as asked; small models often write `Rating: N` or `the rating is N` instead.
_RATING = re.compile(
    r"\[\[\s*([0-2](?:\.\d+)?)\s*\]\]|rating(?: is)?:?\s*([0-2](?:\.\d+)?)\b", re.IGNORECASE
)


def read_rating(reply):
    """The last 0-2 rating in ``reply`` (``[[N]]``, ``Rating: N``, ``rating is N``), or None."""
    found = _RATING.findall(reply or "")
    if not found:
        return None
    value = float(next(v for v in found[-1] if v))
    return value if 0 <= value <= 2 else None


def harmonic(ratings):
    """AxBench's combination: the harmonic mean, 0 when any rating is 0."""
    if any(r <= 0 for r in ratings):
        return 0.0
    return len(ratings) / sum(1.0 / r for r in ratings)


def make_llm(ctx, arg):
    model = llm_model(arg or DEFAULT_MODEL)

    def ask(question):
        return model.prompt(question, stream=False).text()

    def score(prompts, completions):
        out, unread = [], 0
        for prompt, text in zip(prompts, completions, strict=True):
            ratings = []
            for template in ASK.values():
                rating = read_rating(
                    ask(template.format(topic=ctx.topic, prompt=prompt, text=text))
                )
                unread += rating is None
                ratings.append(rating or 0.0)
            out.append(harmonic(ratings))
        if unread:
            log.warning(
                "llm judge %s: %d of %d ratings could not be read (counted as 0)",
                model.model_id,
                unread,
                3 * len(completions),
            )
        return out

    return score


@hookimpl
def steer_register_judges(register):
    register(
        JudgeType(
            "llm",
            make_llm,
            "AxBench's 0-2 concept/instruction/fluency ratings from an llm model, harmonic mean",
            scale=2.0,
        )
    )
