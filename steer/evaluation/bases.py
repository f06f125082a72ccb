"""The seed paper's comparison (Cunningham et al. 2023): are SAE features more interpretable
than other bases of the same size at the same site? Residual-basis directions ("neurons"),
PCA, ICA (scikit-learn) and random directions, against SAE features, each with its top
contexts computed the same way over the same text, scored by the same explainer and scorer.

Every direction gets an activation per token: an SAE feature its encoder output, a linear
direction the projection of the centred residual stream on it (signed so that its longer tail
is positive). Windows are ranked by their largest activation; of the top ``2n``, the even
ranks explain and the odd ranks are the firing contexts scored, against ``n`` random windows
from the lower half. A token is *active* where the activation reaches half the ``2n``-th
window's maximum, the same rule for every basis.

The offline ``lexical`` scorer needs no model: the explanation is the five tokens most often
active in the explaining windows; detection says a window fires when it holds one of them,
fuzzing that a marking is right when a marked token is one of them. Any ``llm`` model can be
the explainer and scorer instead (:mod:`steer.evaluation.autointerp`).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import torch

from steer.evaluation.autointerp import Scored, balanced_accuracy, explain_contexts, score_contexts
from steer.features.store import Context
from steer.model.trace import layer_output

BASES = ("sae", "neurons", "pca", "ica", "random")


def windows(model: Any, texts: list[str], *, max_tokens: int, length: int = 32) -> torch.Tensor:
    """``[W, length]`` token windows of ``texts`` (concatenated), at most ``max_tokens``."""
    ids: list[int] = []
    for text in texts:
        ids += model.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= max_tokens:
            break
    n = min(len(ids), max_tokens) // length
    return torch.tensor(ids[: n * length]).view(n, length)


def hidden(model: Any, hook: Any, ids: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The site's values ``[W, T, d]`` for every window."""
    parts = [
        layer_output(model, hook, ids[i : i + batch].to(model.device)).cpu()
        for i in range(0, len(ids), batch)
    ]
    return torch.cat(parts)


def oriented(directions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Unit rows of ``directions``, each signed so that its projections' longer tail is
    positive."""
    d = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    proj = x @ d.T
    flip = proj.max(0).values < -proj.min(0).values
    return torch.where(flip[:, None], -d, d)


def linear_bases(x: torch.Tensor, k: int, seed: int) -> dict[str, torch.Tensor]:
    """``[k, d]`` directions of each linear baseline, from centred tokens ``x`` ``[N, d]``."""
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    found = {
        "neurons": torch.eye(d)[torch.randperm(d, generator=gen)[:k]],
        "random": torch.randn(k, d, generator=gen),
    }
    _, _, v = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    found["pca"] = v[:k]
    from sklearn.decomposition import FastICA

    sample = x[torch.randperm(len(x), generator=gen)[:20000]].numpy()
    ica = FastICA(n_components=k, whiten="unit-variance", max_iter=500, random_state=seed)
    ica.fit(sample)
    found["ica"] = torch.tensor(ica.components_, dtype=torch.float32)
    return {name: oriented(dirs, x - x.mean(0)) for name, dirs in found.items()}


def sae_acts(
    sae: Any, h: torch.Tensor, keep: torch.Tensor, k: int, n: int, seed: int
) -> tuple[list[int], torch.Tensor]:
    """``(features, acts [W, T, k])``: ``k`` features drawn at random among those that fire
    in at least ``2n`` windows of ``h`` (at kept positions: fewer leave too little to explain
    and score), and their activations."""
    flat = h.reshape(-1, h.shape[-1])
    windows_fired = torch.zeros(sae.cfg.d_sae)
    with torch.inference_mode():
        for w in range(0, len(h), 64):
            acts = sae.encode(h[w : w + 64]).cpu() * keep[w : w + 64, :, None]
            windows_fired += (acts > 0).any(1).sum(0)
        alive = (windows_fired >= 2 * n).nonzero().flatten().tolist()
        chosen = sorted(random.Random(seed).sample(alive, min(k, len(alive))))
        idx = torch.tensor(chosen)
        acts = torch.cat(
            [sae.encode_features(flat[i : i + 2048], idx) for i in range(0, len(flat), 2048)]
        )
    return chosen, acts.float().reshape(*h.shape[:2], len(chosen))


def kept_positions(h: torch.Tensor, factor: float = 10.0) -> torch.Tensor:
    """``[W, T]``: positions every basis is read at. Position 0 (each window's attention
    sink) and tokens whose residual norm is over ``factor`` times the median are left out,
    as the feature index leaves them out: a direction would otherwise "fire" on the few
    outlier tokens whatever it is."""
    norms = h.norm(dim=-1)
    keep = norms <= factor * norms[:, 1:].median()
    keep[:, 0] = False
    return keep


def contexts_of(acts: torch.Tensor, tokens: list[list[str]], n: int, rng: random.Random):
    """``(explaining, firing, quiet)`` contexts of one direction, ``acts`` ``[W, T]`` (the
    positions left out already at the minimum)."""
    peak = acts.max(1).values
    order = peak.argsort(descending=True).tolist()
    top = order[: 2 * n]
    tau = max(float(peak[top[-1]]) / 2, 1e-6)

    def ctx(w: int) -> Context:
        row = [float(a) if a >= tau else 0.0 for a in acts[w].tolist()]
        return Context(act=float(peak[w]), tokens=tokens[w], acts=row, focus=int(acts[w].argmax()))

    lower = order[len(order) // 2 :]
    quiet = rng.sample(lower, min(n, len(lower)))
    return [ctx(w) for w in top[0::2]], [ctx(w) for w in top[1::2]], [ctx(w) for w in quiet]


def norm(token: str) -> str:
    return token.strip().lower()


def lexical_score(explaining, pos, neg, rng: random.Random) -> tuple[str, Scored]:
    """The offline explainer and scorer (see the module docstring)."""
    counts = Counter(norm(c.tokens[i]) for c in explaining for i, a in enumerate(c.acts) if a > 0)
    words = {w for w, _ in counts.most_common(5) if w}
    det_labels = [True] * len(pos) + [False] * len(neg)
    det = [any(norm(t) in words for t in c.tokens[1:]) for c in [*pos, *neg]]
    fuzz_labels, fuzz = [], []
    for c in pos:
        on = [i for i, a in enumerate(c.acts) if a > 0]
        off = [i for i in range(1, len(c.tokens)) if i not in on]
        wrong = rng.sample(off, min(len(on), len(off)))
        for marked, label in ((on, True), (wrong, False)):
            fuzz_labels.append(label)
            fuzz.append(any(norm(c.tokens[i]) in words for i in marked))
    scored = Scored(
        detection=balanced_accuracy(det_labels, det),
        fuzzing=balanced_accuracy(fuzz_labels, fuzz),
        n_detection=len(det),
        n_fuzzing=len(fuzz),
        unreadable=0,
    )
    return " | ".join(sorted(words)), scored


def score_direction(acts, tokens, n: int, ask, seed: int) -> dict[str, Any]:
    """One direction's explanation and scores (``ask`` None: the lexical scorer)."""
    rng = random.Random(seed)
    explaining, pos, neg = contexts_of(acts, tokens, n, rng)
    if ask is None:
        text, scored = lexical_score(explaining, pos, neg, rng)
    else:
        text = explain_contexts(explaining, ask)
        scored = score_contexts(pos, neg, text, ask, rng)
    return {"explanation": text, **scored.to_dict()}


def compare_bases(
    model: Any,
    sae: Any,
    hook: Any,
    texts: list[str],
    *,
    k: int = 20,
    n: int = 10,
    ask=None,
    seed: int = 0,
    max_tokens: int = 20000,
    on_direction=None,
) -> dict[str, Any]:
    """Score ``k`` directions of each basis (see the module docstring): per basis, each
    direction's explanation and scores, and the mean scores with bootstrap intervals over
    directions."""
    from steer.evaluation.stats import bootstrap_ci

    ids = windows(model, texts, max_tokens=max_tokens)
    tokens = [[model.tokenizer.decode([t]) for t in row] for row in ids.tolist()]
    h = hidden(model, hook, ids)
    keep = kept_positions(h)
    flat = h[keep]
    mean = flat.mean(0)
    acts: dict[str, torch.Tensor] = {}
    features, acts["sae"] = sae_acts(sae, h, keep, k, n, seed)
    for name, dirs in linear_bases(flat, k, seed).items():
        acts[name] = (h - mean) @ dirs.T
    for name, values in acts.items():  # left-out positions never rank or show as active
        acts[name] = torch.where(keep[..., None], values, values.min())
    result: dict[str, Any] = {
        "tokens": int(ids.numel()),
        "windows": len(ids),
        "positions_left_out": int((~keep).sum()),
        "directions": k,
        "sae_features": features,
        "bases": {},
    }
    for name in BASES:
        rows = []
        for j in range(acts[name].shape[-1]):
            rows.append(score_direction(acts[name][..., j], tokens, n, ask, seed + j))
            if on_direction is not None:
                on_direction(name, j)
        summary = {
            key: bootstrap_ci([r[key] for r in rows], seed=seed).to_dict()
            for key in ("detection", "fuzzing")
        }
        result["bases"][name] = {"summary": summary, "directions": rows}
    return result
