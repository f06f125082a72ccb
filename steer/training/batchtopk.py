"""BatchTopK SAEs (Bussmann, Leask and Nanda 2024): the ``k x batch`` largest
pre-activations of the whole batch are kept, so a token may use more or fewer than ``k``
features while the batch averages ``k``. Everything else is TopK's (AuxK, unit-norm decoder
rows, the scaled space).

At inference there is no batch to rank against: the SAE is saved as a JumpReLU SAE whose
threshold (the same for every feature) is the mean of the batches' cut-off values over the
last quarter of training, as the paper does; SAELens converts its BatchTopK SAEs the same
way. Its L0 on new text is then about ``k``, not exactly ``k``.

Under torchrun the cut-off is the whole batch's: every rank sends its largest values to
every other, so the ranks keep what one process would keep on the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from steer.distributed import all_gather_cat, all_reduce_sum
from steer.training.checkpoint import CheckpointError, TrainState
from steer.training.topk import TopKTrainer, dead_topk

# The cut-off is found among each token's CANDIDATES_PER_K * k largest pre-activations
# (ranking all B x d_sae values costs ~4x a training step); a token whose every candidate
# makes that first cut is ranked whole, so the cut-off is exact.
CANDIDATES_PER_K = 2


class _BatchTopK(torch.autograd.Function):
    """The kept activations as a sparse list (a token keeps any number of them), with the
    sparse backward pass of TopK's function.

    Returns ``(values [nnz], features [nnz], offsets [B], aux values, aux indices)``: token
    ``i``'s values are ``values[offsets[i]:offsets[i + 1]]``.
    """

    @staticmethod
    def forward(ctx, xc, w_enc, b_enc, cutoff: Callable, dead_idx, k_aux):
        pre = torch.addmm(b_enc, xc, w_enc.t())
        cut = cutoff(pre)
        rows, cols = torch.nonzero((pre >= cut) & (pre > 0), as_tuple=True)
        vals = pre[rows, cols]
        offsets = torch.searchsorted(rows, torch.arange(len(xc), device=rows.device))
        aux_vals, aux_idx = dead_topk(pre, dead_idx, k_aux)
        ctx.save_for_backward(xc, w_enc, rows, cols, aux_idx, aux_vals)
        ctx.mark_non_differentiable(cols, offsets, aux_idx)
        return vals, cols, offsets, aux_vals, aux_idx

    @staticmethod
    def backward(ctx, g_vals, _g_cols, _g_offsets, g_aux, _g_aux_idx):
        xc, w_enc, rows, cols, aux_idx, aux_vals = ctx.saved_tensors
        n, d_sae = len(xc), w_enc.shape[0]
        r = torch.cat(
            [rows, torch.arange(n, device=rows.device).repeat_interleave(aux_idx.shape[1])]
        )
        c = torch.cat([cols, aux_idx.flatten()])
        g = torch.cat([g_vals, (g_aux * (aux_vals > 0)).flatten()])
        # check_invariants off: the indices are in range by construction.
        by_feature = torch.sparse_coo_tensor(torch.stack([c, r]), g, (d_sae, n),
                                             check_invariants=False)  # fmt: skip
        by_token = torch.sparse_coo_tensor(torch.stack([r, c]), g, (n, d_sae),
                                           check_invariants=False)  # fmt: skip
        grad_w = torch.sparse.mm(by_feature, xc)
        grad_b = g.new_zeros(d_sae).index_add_(0, c, g)
        grad_x = torch.sparse.mm(by_token, w_enc)
        return grad_x, grad_w, grad_b, None, None, None


class BatchTopKTrainer(TopKTrainer):
    """TopK training with the top ``k * batch`` activations of the batch kept (see the
    module docstring); saved as a JumpReLU SAE."""

    architecture = "batchtopk"
    saved_architecture = "jumprelu"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.threshold_sum = 0.0  # cut-offs summed over the steps that estimate the threshold
        self.threshold_steps = 0
        self.ranked_whole = 0.0  # share of this rank's tokens ranked whole in the last step

    def encode(
        self, xc: torch.Tensor, dead: torch.Tensor, k_aux: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The batch's ``k * batch`` largest activations as a sparse list (see
        :class:`_BatchTopK`) and the AuxK picks."""
        p = self.params
        return _BatchTopK.apply(xc, p["W_enc"], p["b_enc"], self.batch_cutoff, dead, k_aux)

    def batch_cutoff(self, pre: torch.Tensor) -> float:
        """The ``k * batch``-th largest value of the whole batch (every rank's rows), and the
        threshold's running sum over the last quarter of training."""
        cfg = self.cfg
        n_keep = cfg.k * len(pre) * self.world.size
        m = min(cfg.d_sae, CANDIDATES_PER_K * cfg.k)
        cand = pre.topk(m, dim=1, sorted=False).values
        cut = self._kth_largest(cand.flatten(), n_keep)
        # A token whose smallest candidate makes the cut may hold more values above it: rank
        # such tokens whole. The cut can only rise, so no other token joins them.
        whole = cand.min(dim=1).values >= cut
        self.ranked_whole = float(whole.float().mean())
        if m < cfg.d_sae and int(all_reduce_sum(self.world, whole.sum())):
            pool = torch.cat([cand[~whole].flatten(), pre[whole].flatten()])
            cut = self._kth_largest(pool, n_keep)
        if self.step >= int(cfg.total_steps * 0.75):
            self.threshold_sum += cut
            self.threshold_steps += 1
        return cut

    def _kth_largest(self, values: torch.Tensor, n: int) -> float:
        """The ``n``-th largest of every rank's ``values``."""
        top = values.topk(min(n, values.numel())).values  # sorted, largest first
        if self.world.distributed:  # one size on every rank for the gather
            top = torch.cat([top, top.new_full((n - len(top),), float("-inf"))])
            top = all_gather_cat(self.world, top).topk(n).values
        return float(top[-1])

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        metrics = super().train_step(raw)
        metrics["ranked_whole"] = self.ranked_whole
        return metrics

    @property
    def threshold(self) -> float:
        """The inference threshold in the scaled space: the mean cut-off of the last quarter
        of training (0 before it)."""
        return self.threshold_sum / max(1, self.threshold_steps)

    def raw_weights(self) -> dict[str, torch.Tensor]:
        """TopK's raw weights and the JumpReLU threshold, scaled like the features."""
        out = super().raw_weights()
        out["threshold"] = torch.full((self.cfg.d_sae,), self.threshold / self.scale)
        return out

    def state(self) -> TrainState:
        """The shared state plus the threshold's running sum."""
        state = super().state()
        state.values["threshold_sum"] = self.threshold_sum
        state.values["threshold_steps"] = self.threshold_steps
        return state

    def load(self, state: TrainState) -> None:
        """Continue from ``state`` (checked in full before anything changes)."""
        total = state.value("threshold_sum", float)
        steps = state.value("threshold_steps", int)
        if steps < 0:
            raise CheckpointError(f"'threshold_steps' is {steps}, below 0")
        super().load(state)
        self.threshold_sum, self.threshold_steps = total, steps

    def extra_metadata(self) -> dict[str, Any]:
        return {
            "trained_as": "batchtopk",
            "k": self.cfg.k,
            "threshold_from_steps": self.threshold_steps,
        }
