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

from typing import Any

import torch

from steer.distributed import all_gather_cat, all_reduce_sum
from steer.training.checkpoint import CheckpointError, TrainState
from steer.training.topk import TopKTrainer

# Each token's candidates for the batch's ranking start at its CANDIDATES_PER_K * k largest
# pre-activations; when a token would keep all of them (it might keep more), every token's
# candidates are doubled and the batch ranked again, so the kept set is exact.
CANDIDATES_PER_K = 4


class BatchTopKTrainer(TopKTrainer):
    """TopK training with the top ``k * batch`` activations of the batch kept (see the
    module docstring); saved as a JumpReLU SAE."""

    architecture = "batchtopk"
    saved_architecture = "jumprelu"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.threshold_sum = 0.0  # cut-offs summed over the steps that estimate the threshold
        self.threshold_steps = 0
        self.candidates = 0  # per token, in the last step

    def encode(
        self, xc: torch.Tensor, dead: torch.Tensor, k_aux: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's candidates, with all but the batch's ``k * batch`` largest set to 0
        (those get no gradient: the mask is a constant factor)."""
        cfg = self.cfg
        m = min(cfg.d_sae, CANDIDATES_PER_K * cfg.k)
        while True:
            vals, idx, aux_vals, aux_idx = self.largest(xc, dead, k_aux, m)
            cut = self.batch_cutoff(vals.detach())
            # A row whose smallest candidate makes the cut may hold more above it.
            full = (vals.detach().min(dim=1).values >= cut).sum()
            if m == cfg.d_sae or not int(all_reduce_sum(self.world, full)):
                break
            m = min(cfg.d_sae, 2 * m)
        self.candidates = m
        kept = (vals.detach() >= cut) & (vals.detach() > 0)
        if self.step >= int(cfg.total_steps * 0.75):
            self.threshold_sum += cut
            self.threshold_steps += 1
        return vals * kept, idx, aux_vals, aux_idx

    def batch_cutoff(self, vals: torch.Tensor) -> float:
        """The ``k * batch``-th largest value of the whole batch (every rank's rows)."""
        n_keep = self.cfg.k * len(vals) * self.world.size
        flat = vals.flatten()
        # A rank's values past the global n_keep-th largest of its own cannot be kept.
        top = flat.topk(min(n_keep, flat.numel())).values
        everyone = all_gather_cat(self.world, top)
        return float(everyone.topk(min(n_keep, everyone.numel())).values[-1])

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        metrics = super().train_step(raw)
        metrics["candidates"] = self.candidates
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
