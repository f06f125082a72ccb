"""ReLU + L1 ("standard") SAEs: Anthropic's April 2024 update, with dead-feature resampling
from Towards Monosemanticity (2023)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from steer.distributed import World
from steer.training.checkpoint import CheckpointError, TrainState
from steer.training.config import TrainConfig
from steer.training.trainer import Trainer

log = logging.getLogger(__name__)


class StandardTrainer(Trainer):
    """ReLU SAE trained on MSE + l1_coefficient x sum_i f_i ||W_dec_i|| (Anthropic's April 2024
    update): the penalty weighs each feature by its decoder norm, so shrinking f while growing
    W_dec gains nothing and no unit-norm constraint is needed. Dead features are resampled as in
    Towards Monosemanticity. Same scaled space, schedule and clipping as TopK."""

    architecture = "standard"
    decoder_init_norm = 0.1  # April update: small random decoder rows, W_enc = W_dec^T

    def __init__(
        self,
        cfg: TrainConfig,
        d_in: int,
        sample: torch.Tensor,
        *,
        resample_source: Callable[[int, int], torch.Tensor],
        world: World | None = None,
    ):
        super().__init__(cfg, d_in, sample, world=world)
        self.resample_source = resample_source
        # Its own generator, saved in checkpoints, so a resumed run picks the same inputs.
        self.resample_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.resampled: list[dict[str, int]] = []

    def l1_at(self, step: int) -> float:
        warm = max(1, int(self.cfg.total_steps * self.cfg.l1_warmup_frac))
        return self.cfg.l1_coefficient * min(1.0, (step + 1) / warm)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        # (x - b_dec) W_enc^T + b_enc, with b_dec folded into the bias: its gradient is then a
        # mat-vec instead of one more [B, d_sae] x [d_sae, d_in] product.
        bias = p["b_enc"] - p["W_enc"] @ p["b_dec"]
        f = torch.relu(torch.addmm(bias, x, p["W_enc"].t()))
        return f, torch.addmm(p["b_dec"], f, p["W_dec"])

    def objective_loss(
        self, x: torch.Tensor, l1_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, squared error, features)`` on this rank's rows. The loss is a mean over
        them, so DDP's average over equal slices is the whole batch's loss."""
        p = self.params
        f, recon = self._forward(x)
        sq_err = (recon - x).pow(2).sum()
        l1 = (f @ p["W_dec"].norm(dim=1)).mean()
        return sq_err / len(x) + l1_weight * l1, sq_err.detach(), f

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        x = raw * self.scale
        dead = int((self.since_fired >= cfg.dead_tokens).sum())
        total_var = self.total_variance(x)
        loss, sq_err, f = self.objective(x, self.l1_at(self.step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            self._apply_gradients()
            active = f > 0
            self._record_firing(active.sum(0), len(x))
        self.step += 1
        if (
            cfg.resample_every
            and self.step % cfg.resample_every == 0
            and self.step <= cfg.total_steps * cfg.resample_until
        ):
            self.resample()
        total_loss, total_sq, n_active = self.batch_sums(loss, sq_err, active.sum())
        size = self.world.size
        self.last_metrics = {
            "loss": total_loss / size,
            "ev": 1.0 - total_sq / float(total_var),
            "l0": n_active / (len(x) * size),
            "dead": dead / cfg.d_sae,
        }
        return self.last_metrics

    @torch.no_grad()
    def resample(self) -> int:
        """Re-initialise dead features toward inputs the SAE reconstructs badly (Towards
        Monosemanticity): inputs are drawn with probability proportional to their squared loss;
        a feature's decoder row becomes the input's direction (at the mean live decoder norm),
        its encoder row the same direction at 0.2 x the mean live encoder norm, its bias 0, and
        its Adam moments are cleared. Returns how many features were resampled."""
        cfg, p = self.cfg, self.params
        dead = (self.since_fired >= cfg.dead_tokens).nonzero().flatten()
        if len(dead) == 0:
            return 0
        seed = cfg.seed * 1_000_003 + self.step  # rows depend only on (seed, step): resumable
        x = self.resample_source(cfg.resample_rows, seed) * self.scale
        losses = torch.cat([self._input_loss(chunk) for chunk in x.split(4096)])
        weights = losses.pow(2)
        if not torch.isfinite(weights).all() or float(weights.sum()) <= 0:
            return 0
        pick = torch.multinomial(weights, len(dead), replacement=True, generator=self.resample_gen)
        direction = x[pick] - p["b_dec"]
        direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
        alive = torch.ones(cfg.d_sae, dtype=torch.bool)
        alive[dead] = False
        enc_norm = p["W_enc"][alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
        dec_norm = p["W_dec"][alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
        p["W_dec"][dead] = direction * dec_norm
        p["W_enc"][dead] = direction * (0.2 * enc_norm)
        p["b_enc"][dead] = 0.0
        for name in ("W_enc", "W_dec", "b_enc"):
            for moment in self.opt.state.get(p[name], {}).values():
                if torch.is_tensor(moment) and moment.dim() and len(moment) == cfg.d_sae:
                    moment[dead] = 0.0
        self.since_fired[dead] = 0
        self.resampled.append({"step": self.step, "features": len(dead)})
        log.info("step %d: resampled %d dead features", self.step, len(dead))
        return len(dead)

    def _input_loss(self, x: torch.Tensor) -> torch.Tensor:
        f, recon = self._forward(x)
        l1 = f @ self.params["W_dec"].norm(dim=1)
        return (recon - x).pow(2).sum(1) + self.cfg.l1_coefficient * l1

    def state(self) -> TrainState:
        """The shared state plus the resample generator and the resampling history."""
        state = super().state()
        state.tensors["resample_gen"] = self.resample_gen.get_state()
        state.values["resampled"] = [dict(r) for r in self.resampled]
        return state

    def load(self, state: TrainState) -> None:
        """Continue from ``state`` (checked in full before anything changes)."""
        gen = state.generator("resample_gen")
        resampled = state.value("resampled", list)
        for record in resampled:
            if not (
                isinstance(record, dict)
                and set(record) == {"step", "features"}
                and all(type(v) is int for v in record.values())
            ):
                raise CheckpointError(f"'resampled' holds {record!r}, not a resampling")
        super().load(state)
        self.resample_gen.set_state(gen)
        self.resampled = [dict(r) for r in resampled]

    def raw_weights(self) -> dict[str, torch.Tensor]:
        """Weights for raw activations with unit-norm decoder rows: ReLU commutes with a positive
        scale, so each decoder norm moves into that feature's encoder row and bias (the same
        reconstruction; feature values become comparable), and the input scale is folded
        into the biases as for TopK."""
        p = {n: t.detach() for n, t in self.params.items()}
        norms = p["W_dec"].norm(dim=1).clamp_min(1e-8)
        return {
            "W_enc": (p["W_enc"] * norms[:, None]).t().contiguous(),
            "b_enc": p["b_enc"] * norms / self.scale,
            "W_dec": p["W_dec"] / norms[:, None],
            "b_dec": p["b_dec"] / self.scale,
        }

    def extra_metadata(self) -> dict[str, Any]:
        return {"resampling": list(self.resampled)}
