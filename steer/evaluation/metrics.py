"""What each arm costs: fluency (perplexity of its completions under the unsteered model, KL
of next-token distributions on held-out neutral text with its edit applied) and capability
(accuracy on a multiple-choice set scored by log-likelihood, with the edit applied)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from steer.corpus.shipped import shipped_text
from steer.errors import SteerError
from steer.evaluation.arms import HiddenEdit
from steer.io import check_text_file, json_lines
from steer.model import LoadedModel
from steer.model.loss import completion_nll
from steer.model.sites import Hook
from steer.model.trace import layer_output, patched_logits

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
MC_FILE = DATA / "mc-general.jsonl"


@dataclass(frozen=True)
class ArmEdit:
    """What an arm does to one forward pass: text put before the input (the prompting arm)
    and/or an edit of the hidden state at ``hook``."""

    prefix: str = ""
    edit: HiddenEdit | None = None
    hook: Hook | None = None


def prompt_losses(
    model: LoadedModel, prompts: list[str], completions: list[str], *, chat: bool | None
) -> list[float | None]:
    """Each completion's mean per-token loss under ``model`` after its prompt (``None`` for an
    empty completion: it has no tokens to score)."""
    out: list[float | None] = []
    for prompt, text in zip(prompts, completions, strict=True):
        total, count = completion_nll(model, [prompt], [text], chat=chat)
        out.append(total / count if count else None)
    return out


def neutral_windows(model: LoadedModel, *, n: int, length: int = 64) -> torch.Tensor:
    """``[n, length]`` token windows of the shipped WikiText-2 excerpt, held out from every
    prompt set: the text KL is measured on."""
    text = shipped_text("wikitext2-excerpt").read_text(encoding="utf-8")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    n = min(n, len(ids) // length)
    return torch.tensor(ids[: n * length], device=model.device).view(n, length)


def edited_logprobs(
    model: LoadedModel, ids: torch.Tensor, arm: ArmEdit, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token log-probabilities ``[B, T, vocab]`` of ``ids`` with the arm's prefix before
    them (its positions dropped) and its edit applied at its hook."""
    start = 0
    if arm.prefix:
        pre = model.tokenizer(arm.prefix, add_special_tokens=False, return_tensors="pt")
        pre_ids = pre["input_ids"].to(ids.device).expand(ids.shape[0], -1)
        start = pre_ids.shape[1]
        ids = torch.cat([pre_ids, ids], dim=1)
        if valid is not None:
            valid = torch.cat([torch.ones_like(pre_ids, dtype=torch.bool), valid], dim=1)
    if arm.edit is None or arm.hook is None:
        with torch.inference_mode():
            logits = model.hf(input_ids=ids).logits.float()
    else:
        hidden = layer_output(model, arm.hook, ids)
        with torch.inference_mode():  # the SAE's parameters may require grad
            new = arm.edit(hidden, valid)
        logits = patched_logits(model, arm.hook, ids, new)
    return torch.log_softmax(logits[:, start:], dim=-1)


def kl_per_window(model: LoadedModel, windows: torch.Tensor, arm: ArmEdit) -> list[float]:
    """Each window's mean KL(unsteered || arm) of the next-token distributions, in nats."""
    out: list[float] = []
    for row in windows:
        plain = edited_logprobs(model, row[None], ArmEdit())
        edited = edited_logprobs(model, row[None], arm)
        kl = (plain.exp() * (plain - edited)).sum(-1).mean()
        out.append(float(kl))
    return out


def read_mc(path: str | Path | None = None) -> list[dict]:
    """The multiple-choice questions of a JSONL file (``question``, ``choices``, ``answer``:
    the right choice's index); the shipped set by default. Malformed records are one line."""
    path = Path(path) if path is not None else MC_FILE
    check_text_file(path, what="multiple-choice file")
    questions = []
    for where, q in json_lines(path):
        ok = isinstance(q, dict) and isinstance(q.get("question"), str)
        choices = q.get("choices") if ok else None
        ok = ok and isinstance(choices, list) and len(choices) >= 2
        ok = ok and all(isinstance(c, str) and c for c in choices)
        ok = ok and isinstance(q.get("answer"), int) and 0 <= q["answer"] < len(choices)
        if not ok:
            raise SteerError(
                "needs question (text), choices (2+ texts) and answer (a choice's index)",
                where=where,
            )
        questions.append(q)
    if not questions:
        raise SteerError("no questions in the file", where=str(path))
    return questions


def mc_correct(model: LoadedModel, questions: list[dict], arm: ArmEdit) -> list[float]:
    """1.0 per question whose right choice has the highest summed log-likelihood after
    ``Question: ...\\nAnswer:`` with the arm's edit, else 0.0."""
    tok = model.tokenizer
    out = []
    for q in questions:
        context = tok(f"Question: {q['question']}\nAnswer:", add_special_tokens=False)
        ctx_ids = context["input_ids"]
        rows = [ctx_ids + tok(" " + c, add_special_tokens=False)["input_ids"] for c in q["choices"]]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
        valid = torch.tensor([[i < len(r) for i in range(width)] for r in rows])
        logprobs = edited_logprobs(model, ids, arm, valid.to(model.device))
        scores = []
        for b, r in enumerate(rows):
            targets = torch.tensor(r[len(ctx_ids) :], device=model.device)
            lp = logprobs[b, len(ctx_ids) - 1 : len(r) - 1]
            scores.append(float(lp.gather(1, targets[:, None]).sum()))
        out.append(1.0 if max(range(len(scores)), key=scores.__getitem__) == q["answer"] else 0.0)
    return out
