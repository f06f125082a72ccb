"""The training state every SAE architecture shares, and the initialisation it starts from."""

from __future__ import annotations

import math
from typing import Any

import torch

from steer.distributed import World, all_reduce_sum
from steer.training.checkpoint import CheckpointError, TrainState, put_adam, take_adam
from steer.training.config import TrainConfig


class Objective(torch.nn.Module):
    """A trainer's parameters as one module whose forward is the trainer's loss, so that
    torch's DistributedDataParallel can own them: under torchrun it averages their gradients
    over the ranks during the backward pass (and checks every rank starts from the same
    values)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], loss: Any):
        super().__init__()
        for name, param in params.items():
            self.register_parameter(name, param)
        self.loss = loss

    def forward(self, *args: Any) -> Any:
        return self.loss(*args)


class Trainer:
    """What every architecture's trainer shares: parameters in a scaled space (inputs at mean
    norm sqrt(d_in), so one learning rate fits every model), Adam with warm-up, decay and
    clipping, dead-feature clocks, feature density, and an exact state to resume from.

    Parameters: W_enc [d_sae, d_in] (rows), W_dec [d_sae, d_in], b_enc, b_dec. Subclasses set
    ``architecture`` and ``decoder_init_norm`` and implement ``train_step(raw) -> metrics``
    and ``objective_loss`` (what :class:`Objective` runs).

    Under torchrun (``world`` of several ranks) every rank holds the same state and trains
    on its slice of each global batch: gradients are averaged by DistributedDataParallel,
    and what depends on the whole batch (its variance, the features that fired, the
    metrics) is summed over the ranks, so every rank takes the step one process would take
    on the whole batch.
    """

    architecture = ""
    decoder_init_norm = 1.0

    @property
    def saved_architecture(self) -> str:
        """The SAELens architecture the trained SAE is saved as (its own by default)."""
        return self.architecture

    def __init__(
        self, cfg: TrainConfig, d_in: int, sample: torch.Tensor, *, world: World | None = None
    ):
        self.cfg, self.d_in = cfg, d_in
        self.world = world = world or World()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.scale = math.sqrt(d_in) / float(sample.norm(dim=-1).mean())
        w_dec = torch.randn(cfg.d_sae, d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        w_dec *= self.decoder_init_norm
        self.params = {
            "W_enc": torch.nn.Parameter(w_dec.clone()),  # tied init (Gao et al.)
            "b_enc": torch.nn.Parameter(torch.zeros(cfg.d_sae)),
            "W_dec": torch.nn.Parameter(w_dec),
            # The geometric median is a robust centre: far-off tokens cannot drag it.
            "b_dec": torch.nn.Parameter(geometric_median(sample * self.scale)),
        }
        self.opt = torch.optim.Adam(self.params.values(), lr=cfg.lr)
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
        self.fire_counts = torch.zeros(cfg.d_sae, dtype=torch.long)
        self.count_tokens = 0
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.objective: torch.nn.Module = Objective(self.params, self.objective_loss)
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.objective = DistributedDataParallel(self.objective)

    def objective_loss(self, *args: Any) -> Any:
        """The loss of one step on this rank's rows (run through :attr:`objective`)."""
        raise NotImplementedError

    def total_variance(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of squared deviations from the mean over the whole batch (all ranks' rows)."""
        if not self.world.distributed:
            return (x - x.mean(0)).pow(2).sum()
        mean = all_reduce_sum(self.world, x.sum(0)) / (len(x) * self.world.size)
        return all_reduce_sum(self.world, (x - mean).pow(2).sum())

    def batch_sums(self, *values: torch.Tensor | float) -> list[float]:
        """Scalars summed over the ranks (themselves in one process), in one all-reduce."""
        packed = torch.tensor(
            [float(v.detach()) if torch.is_tensor(v) else float(v) for v in values],
            dtype=torch.float64,
        )
        return all_reduce_sum(self.world, packed).tolist()

    def lr_at(self, step: int) -> float:
        total = self.cfg.total_steps
        warm = max(1, int(total * self.cfg.warmup_frac))
        decay_start = int(total * (1 - self.cfg.decay_frac))
        factor = min(1.0, (step + 1) / warm)
        if step >= decay_start:
            factor *= max(0.0, (total - step) / max(1, total - decay_start))
        return self.cfg.lr * factor

    def _apply_gradients(self) -> None:
        """Clip, set this step's learning rate, and take the Adam step (under no_grad)."""
        torch.nn.utils.clip_grad_norm_(self.params.values(), self.cfg.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()

    def _record_firing(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Dead-feature clocks and, over the last quarter of training, feature density, from
        this rank's firing counts summed over the ranks (the whole batch)."""
        fired = all_reduce_sum(self.world, fired)
        n_tokens *= self.world.size
        self.since_fired += n_tokens
        self.since_fired[fired > 0] = 0
        if self.step >= int(self.cfg.total_steps * 0.75):
            self.fire_counts += fired
            self.count_tokens += n_tokens

    def state(self) -> TrainState:
        """The exact state to resume from: tensors (parameters, Adam's moments, the clocks,
        the RNG) and plain values (step, scale, metrics, Adam's hyper-parameters)."""
        state = TrainState()
        for name, param in self.params.items():
            state.tensors[f"params.{name}"] = param.detach().clone()
        put_adam(state, self.opt, list(self.params))
        state.tensors["since_fired"] = self.since_fired.clone()
        state.tensors["fire_counts"] = self.fire_counts.clone()
        state.tensors["rng"] = torch.get_rng_state()
        state.values.update(
            count_tokens=self.count_tokens,
            step=self.step,
            scale=self.scale,
            metrics=dict(self.last_metrics),
        )
        return state

    def load(self, state: TrainState) -> None:
        """Continue from ``state``. Everything is checked before anything changes: a state
        that does not fit (a tensor missing, extra or of another shape, a value of the wrong
        type) raises :class:`CheckpointError` and leaves the trainer as it was."""
        d_sae = self.cfg.d_sae
        params = {
            name: state.tensor(f"params.{name}", p.shape, p.dtype)
            for name, p in self.params.items()
        }
        adam = take_adam(state, self.opt, self.params)
        since_fired = state.tensor("since_fired", (d_sae,), torch.long)
        fire_counts = state.tensor("fire_counts", (d_sae,), torch.long)
        rng = state.generator("rng")
        count_tokens = state.value("count_tokens", int)
        step, scale = state.value("step", int), state.value("scale", float)
        metrics = state.value("metrics", dict)
        if not all(isinstance(v, (int, float)) for v in metrics.values()):
            raise CheckpointError("'metrics' holds a value that is not a number")
        state.check_all_taken()
        with torch.no_grad():
            for name, tensor in params.items():
                self.params[name].copy_(tensor)
        self.opt.load_state_dict(adam)
        self.since_fired, self.fire_counts = since_fired, fire_counts
        self.count_tokens, self.step, self.scale = count_tokens, step, scale
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        torch.set_rng_state(rng)

    def raw_weights(self) -> dict[str, torch.Tensor]:
        """SAELens weights that act on raw activations: the features come out divided by the
        scale, so W_enc and the unit-norm W_dec stay as trained and only the biases change."""
        p = {n: t.detach() for n, t in self.params.items()}
        return {
            "W_enc": p["W_enc"].t().contiguous(),
            "b_enc": p["b_enc"] / self.scale,
            "W_dec": p["W_dec"].clone(),
            "b_dec": p["b_dec"] / self.scale,
        }

    def log10_density(self) -> torch.Tensor:
        return torch.log10(self.fire_counts.double() / max(1, self.count_tokens) + 1e-10).float()

    def extra_metadata(self) -> dict[str, Any]:
        """Architecture-specific facts for the saved SAE's metadata."""
        return {}

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a batch of raw activations; returns its metrics."""
        raise NotImplementedError


def geometric_median(x: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distances to the rows of ``x``."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < eps * (1 + y.norm()):
            return y_new
        y = y_new
    return y
