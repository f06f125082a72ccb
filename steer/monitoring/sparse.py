"""A sparse probe on SAE features: L1-regularised logistic regression over every feature.

The SAEBench-style question is how few SAE features a linear readout needs. Each text is
one row of pooled feature activations (the max over its kept positions); columns are
standardised with the training set's mean and standard deviation, and the class-balanced
logistic loss plus ``l1 * |w|_1`` is minimised by FISTA (accelerated proximal gradient),
whose soft-thresholding step makes most weights exactly zero. Deterministic: full batch from
zero, a fixed number of steps at most.
"""

from __future__ import annotations

import torch

from steer.errors import SteerError
from steer.monitoring.probe import Probe


def _lipschitz(z: torch.Tensor, sample_w: torch.Tensor, iters: int = 50) -> float:
    """An upper bound of the logistic loss gradient's Lipschitz constant: a quarter of the
    largest eigenvalue of ``Z' diag(w) Z`` (power iteration), the bias column included."""
    zb = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)
    v = torch.ones(zb.shape[1], dtype=z.dtype) / zb.shape[1] ** 0.5
    top = torch.tensor(1.0, dtype=z.dtype)
    for _ in range(iters):
        u = zb.T @ (sample_w * (zb @ v))
        top = u.norm()
        if top == 0:
            return 1.0
        v = u / top
    return 0.25 * float(top) * 1.05  # 5 % margin: power iteration approaches from below


def train_sparse_probe(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    l1: float = 0.03,
    max_iter: int = 2000,
    tol: float = 1e-7,
) -> Probe:
    """Fit ``logit = ((x - mean) / std) @ weight + bias`` separating ``pos`` ``[n_pos, d]``
    from ``neg`` ``[n_neg, d]`` with an L1 penalty ``l1`` on ``weight`` (the bias is free).

    Each class weighs one half of the loss. ``meta["n_features"]`` is the number of
    non-zero weights. Columns that never vary keep a zero weight.
    """
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise SteerError("a probe needs at least one positive and one negative text")
    if not l1 >= 0:
        raise SteerError(f"the L1 penalty must be >= 0 (got {l1})")
    x = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.shape[0])]).double()
    sample_w = torch.where(y > 0, 0.5 / pos.shape[0], 0.5 / neg.shape[0]).double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    live = std > 1e-6
    z = torch.where(live, (x - mean) / std.clamp_min(1e-6), torch.zeros_like(x))
    step = 1.0 / _lipschitz(z, sample_w)
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.float64)
    w_prev, b_prev, t = w.clone(), b.clone(), 1.0
    for _ in range(max_iter):
        # FISTA: a gradient step from the extrapolated point, then soft-thresholding.
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        mom = (t - 1) / t_next
        wy, by = w + mom * (w - w_prev), b + mom * (b - b_prev)
        r = sample_w * (torch.sigmoid(z @ wy + by) - y)
        gw, gb = z.T @ r, r.sum()
        w_new = wy - step * gw
        w_new = torch.sign(w_new) * (w_new.abs() - step * l1).clamp_min(0)
        b_new = by - step * gb
        done = (w_new - w).abs().max() < tol and (b_new - b).abs().max() < tol
        w_prev, b_prev, w, b, t = w, b, w_new, b_new, t_next
        if done:
            break
    nz = int((w != 0).sum())
    return Probe(
        weight=w.float(),
        bias=b.float(),
        mean=mean.float(),
        std=std.clamp_min(1e-6).float(),
        meta={"kind": "sparse", "l1": l1, "n_features": nz},
    )


def token_weights(probe: Probe) -> tuple[torch.Tensor, float]:
    """The probe as a per-token linear score ``acts @ w + b`` (``w`` ``[d]``, zero off the
    probe's features): the standardisation folded into the weights and bias, so a monitor
    can read raw activations."""
    w = probe.weight / probe.std
    return w, float(probe.bias[0] - (w * probe.mean).sum())
