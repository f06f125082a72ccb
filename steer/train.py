"""Train a sparse autoencoder (TopK, or ReLU + L1 "standard") on residual-stream activations.

Pipeline: token windows -> activation cache (resumable, float16 on disk) -> shuffled batches
-> SAE trained with Adam in a scaled space (inputs at mean norm sqrt(d_in), so one learning
rate fits every model) -> saved in SAELens format with the scale folded back, so the saved SAE
works on raw activations. Checkpoints hold everything needed to continue bit-for-bit: the
batch at step s is a pure function of (seed, s), so resuming replays the data stream.

Architectures: ``topk`` (Gao et al. 2024: TopK activation, AuxK loss for dead latents, unit-norm
decoder rows) and ``standard`` (Anthropic's April 2024 update: ReLU, MSE + l1_coefficient x
sum_i f_i ||W_dec_i||, L1 warm-up, no norm constraint; plus dead-feature resampling from
Towards Monosemanticity, 2023).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from steer.activation_cache import build_activation_cache
from steer.activations import (
    OUTLIER_RULE,
    DataSource,
    HFSource,
    build_windows,
    file_sha256,
    source_files,
)
from steer.errors import SteerError
from steer.fileio import atomic_path
from steer.train_eval import evaluate_sae

__all__ = ["ARCHITECTURES", "TrainConfig", "evaluate_sae", "geometric_median", "train_sae"]

ARCHITECTURES = ("topk", "standard")
# Settings only the standard architecture reads. A TopK run's key leaves them (and the
# architecture) out, so its checkpoints and caches keep the keys they had before `standard`.
_STANDARD_ONLY = (
    "architecture",
    "l1_coefficient",
    "l1_warmup_frac",
    "resample_every",
    "resample_until",
    "resample_rows",
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in the saved SAE's metadata)."""

    out_dir: str
    data: tuple[DataSource, ...]  # paths (files or folders) and HFSource datasets
    data_weights: tuple[float, ...] | None = None
    model: str = "smollm2-135m-instruct"
    layer: int = 12
    d_sae: int = 4608
    k: int = 32
    ctx_len: int = 128
    collect_tokens: int = 1_000_000  # window tokens run through the model (unique data)
    train_tokens: int = 2_000_000  # activations seen by the optimizer (several passes)
    batch_size: int = 2048
    # Adam learning rate in the scaled space. Short CPU runs want more than the scaling-law
    # 2e-4 / sqrt(d_sae / 2**14) (= 3.8e-4 at 4608): on SmolLM2 L12, 400 steps of 2048 gave
    # held-out EV .73 / .78 / .81 / .82 at 4e-4 / 1e-3 / 2e-3 / 4e-3 (4e-3 left 1% dead).
    lr: float = 2e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2  # linear decay to 0 over the last part of training
    grad_clip: float = 1.0
    auxk_coef: float = 1 / 32
    k_aux: int | None = None  # None: d_in // 2
    dead_tokens: int = 250_000  # a latent is dead after this many tokens without firing
    outlier_factor: float = 10.0
    seed: int = 0
    cache_dir: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 200
    # Dtype of the saved weights file (None: float32). float16 halves the file; the SAE still
    # computes in float32 (cfg.json's dtype), which is how the shipped SAE fits in 25 MB.
    storage_dtype: str | None = None
    resume: bool = False
    batch_windows: int = 16
    buffer_rows: int = 1 << 17
    architecture: str = "topk"  # "topk" or "standard"
    # standard only. L1 weight on f_i * ||W_dec_i|| with the MSE summed over d_in (inputs at
    # mean norm sqrt(d_in)): Anthropic's April update uses 5.
    l1_coefficient: float = 5.0
    l1_warmup_frac: float = 0.05  # the L1 weight ramps up linearly over this part of training
    # Resample dead features every this many steps (0: never) until this fraction of training;
    # a feature is dead after dead_tokens tokens without firing. The inputs that seed the new
    # features are drawn from resample_rows cached activations.
    resample_every: int = 250
    resample_until: float = 0.5
    resample_rows: int = 32_768
    extra_metadata: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def total_steps(self) -> int:
        return max(1, self.train_tokens // self.batch_size)


class _TopK(torch.autograd.Function):
    """TopK encoder with a sparse backward pass.

    Only k (+ k_aux) pre-activations per token receive gradient, so the encoder weight gradient
    is a sparse-times-dense product (~17 ms) instead of a dense [B, d_sae] x [B, d_in] one
    (~170 ms at B=2048 on one CPU core). Returns (values, indices, aux values, aux indices).
    """

    @staticmethod
    def forward(ctx, xc, w_enc, b_enc, k, dead_idx, k_aux):
        pre = torch.addmm(b_enc, xc, w_enc.t())
        vals, idx = pre.topk(k, dim=1, sorted=False)
        vals = vals.clamp_min(0)
        if dead_idx is not None and len(dead_idx) and k_aux:
            aux_vals, j = pre.index_select(1, dead_idx).topk(min(k_aux, len(dead_idx)), dim=1)
            aux_idx, aux_vals = dead_idx[j], aux_vals.clamp_min(0)
        else:
            aux_vals, aux_idx = pre.new_zeros(len(xc), 0), idx.new_zeros(len(xc), 0)
        ctx.save_for_backward(xc, w_enc, idx, vals, aux_idx, aux_vals)
        ctx.mark_non_differentiable(idx, aux_idx)
        return vals, idx, aux_vals, aux_idx

    @staticmethod
    def backward(ctx, g_vals, _g_idx, g_aux, _g_aux_idx):
        xc, w_enc, idx, vals, aux_idx, aux_vals = ctx.saved_tensors
        g = torch.cat([g_vals * (vals > 0), g_aux * (aux_vals > 0)], dim=1)
        cols = torch.cat([idx, aux_idx], dim=1)
        rows = torch.arange(len(xc)).repeat_interleave(cols.shape[1])
        sparse = torch.sparse_coo_tensor(
            torch.stack([cols.flatten(), rows]),
            g.flatten(),
            (w_enc.shape[0], len(xc)),
            check_invariants=False,  # indices are in range by construction
        )
        grad_w = torch.sparse.mm(sparse, xc)
        grad_b = torch.zeros(w_enc.shape[0]).index_add_(0, cols.flatten(), g.flatten())
        grad_x = F.embedding_bag(cols, w_enc, per_sample_weights=g, mode="sum")
        return grad_x, grad_w, grad_b, None, None, None


class _Trainer:
    """TopK. Parameters in the scaled space: W_enc [d_sae, d_in] (rows), W_dec [d_sae, d_in]
    (unit rows), b_enc, b_dec."""

    architecture = "topk"
    decoder_init_norm = 1.0

    def __init__(self, cfg: TrainConfig, d_in: int, sample: torch.Tensor):
        self.cfg, self.d_in = cfg, d_in
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

    def lr_at(self, step: int) -> float:
        total = self.cfg.total_steps
        warm = max(1, int(total * self.cfg.warmup_frac))
        decay_start = int(total * (1 - self.cfg.decay_frac))
        factor = min(1.0, (step + 1) / warm)
        if step >= decay_start:
            factor *= max(0.0, (total - step) / max(1, total - decay_start))
        return self.cfg.lr * factor

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        cfg, p = self.cfg, self.params
        x = raw * self.scale
        dead = (self.since_fired >= cfg.dead_tokens).nonzero().flatten()
        k_aux = cfg.k_aux or self.d_in // 2
        vals, idx, aux_vals, aux_idx = _TopK.apply(
            x - p["b_dec"], p["W_enc"], p["b_enc"], cfg.k, dead, k_aux
        )
        recon = F.embedding_bag(idx, p["W_dec"], per_sample_weights=vals, mode="sum") + p["b_dec"]
        total_var = (x - x.mean(0)).pow(2).sum()
        err = recon - x
        fvu = err.pow(2).sum() / total_var
        loss = fvu
        if aux_idx.shape[1]:
            # AuxK: dead latents learn to explain what the live ones miss (Gao et al. 2024).
            e_hat = F.embedding_bag(aux_idx, p["W_dec"], per_sample_weights=aux_vals, mode="sum")
            aux = (e_hat + err.detach()).pow(2).sum() / total_var
            loss = loss + cfg.auxk_coef * min(1.0, len(dead) / k_aux) * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # Drop the gradient along each decoder row: only its direction may change.
            w, g = p["W_dec"], p["W_dec"].grad
            g -= (g * w).sum(1, keepdim=True) * w
            self._apply_gradients()
            w /= w.norm(dim=1, keepdim=True).clamp_min(1e-8)
            self._record_firing(torch.bincount(idx[vals > 0], minlength=cfg.d_sae), len(x))
        self.step += 1
        self.last_metrics = {
            "loss": loss.item(),
            "ev": 1.0 - fvu.item(),
            "l0": float((vals > 0).sum(1).float().mean()),
            "dead": len(dead) / cfg.d_sae,
        }
        return self.last_metrics

    def _apply_gradients(self) -> None:
        """Clip, set this step's learning rate, and take the Adam step (under no_grad)."""
        torch.nn.utils.clip_grad_norm_(self.params.values(), self.cfg.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()

    def _record_firing(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Dead-feature clocks and, over the last quarter of training, feature density."""
        self.since_fired += n_tokens
        self.since_fired[fired > 0] = 0
        if self.step >= int(self.cfg.total_steps * 0.75):
            self.fire_counts += fired
            self.count_tokens += n_tokens

    def state(self) -> dict[str, Any]:
        return {
            "params": {n: t.detach().clone() for n, t in self.params.items()},
            "opt": self.opt.state_dict(),
            "since_fired": self.since_fired,
            "fire_counts": self.fire_counts,
            "count_tokens": self.count_tokens,
            "step": self.step,
            "scale": self.scale,
            "metrics": self.last_metrics,
            "rng": torch.get_rng_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, t in state["params"].items():
                self.params[n].copy_(t)
        self.opt.load_state_dict(state["opt"])
        self.since_fired = state["since_fired"]
        self.fire_counts = state["fire_counts"]
        self.count_tokens = state["count_tokens"]
        self.step, self.scale = state["step"], state["scale"]
        self.last_metrics = state["metrics"]
        torch.set_rng_state(state["rng"])

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


class _StandardTrainer(_Trainer):
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
    ):
        super().__init__(cfg, d_in, sample)
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

    def train_step(self, raw: torch.Tensor) -> dict[str, float]:
        cfg, p = self.cfg, self.params
        x = raw * self.scale
        dead = int((self.since_fired >= cfg.dead_tokens).sum())
        f, recon = self._forward(x)
        sq_err = (recon - x).pow(2).sum()
        fvu = sq_err / (x - x.mean(0)).pow(2).sum()
        l1 = (f @ p["W_dec"].norm(dim=1)).mean()
        loss = sq_err / len(x) + self.l1_at(self.step) * l1
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
        self.last_metrics = {
            "loss": loss.item(),
            "ev": 1.0 - fvu.item(),
            "l0": float(active.sum(1).float().mean()),
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

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "resample_gen": self.resample_gen.get_state(),
            "resampled": list(self.resampled),
        }

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.resample_gen.set_state(state["resample_gen"])
        self.resampled = list(state["resampled"])

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


def _hf_metadata(data: tuple[DataSource, ...]) -> dict[str, Any]:
    """Hugging Face sources have no file hash; their name, config, split and row cap say
    what was read."""
    hf = [asdict(d) for d in data if isinstance(d, HFSource)]
    return {"hf_datasets": hf} if hf else {}


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


def _run_key(cfg: TrainConfig) -> str:
    keep = asdict(cfg)
    volatile_keys = (
        "resume",
        "checkpoint_every",
        "checkpoint_dir",
        "cache_dir",
        "extra_metadata",
        "storage_dtype",
    )
    for volatile in volatile_keys:
        keep.pop(volatile)
    if cfg.architecture == "topk":
        for name in _STANDARD_ONLY:
            keep.pop(name)
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _default_dir(kind: str, cfg: TrainConfig) -> Path:
    from steer.model import cache_dir

    return cache_dir() / kind / f"{Path(cfg.out_dir).name}-{_run_key(cfg)}"


def collect_activations(
    cfg: TrainConfig,
    model: Any,
    *,
    progress: Callable[[int, int, Any], None] | None = None,
) -> tuple[torch.Tensor, Any]:
    """Cut ``cfg``'s token windows and run them through the model into the (resumable)
    activation cache. Returns the windows and the cache; a complete cache is reused as is.
    ``progress(done, total, stats)`` is called as windows are processed."""
    windows = build_windows(
        model.tokenizer,
        cfg.data,
        ctx_len=cfg.ctx_len,
        n_tokens=cfg.collect_tokens,
        weights=cfg.data_weights,
        seed=cfg.seed,
    )
    cache_path = Path(cfg.cache_dir) if cfg.cache_dir else _default_dir("activations", cfg)
    cache = build_activation_cache(
        model,
        cfg.layer,
        windows,
        cache_path,
        outlier_factor=cfg.outlier_factor,
        batch_windows=cfg.batch_windows,
        progress=progress,
    )
    return windows, cache


def train_sae(
    config: TrainConfig,
    *,
    model: Any = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Collect activations, train an SAE (``config.architecture``), save it (SAELens format)
    to ``config.out_dir``.

    ``model`` is a loaded :class:`steer.model.LoadedModel` (default: load ``config.model``).
    ``callback(step, metrics)`` runs after every step. With ``config.resume`` a run continues
    from its last checkpoint (same config required) and gives the weights of an unbroken run.
    """
    from steer.model import load_model
    from steer.sae.base import parse_dtype
    from steer.sae.formats import save_sae

    cfg = config
    if cfg.architecture not in ARCHITECTURES:
        raise SteerError(
            f"unknown architecture {cfg.architecture!r} (known: {', '.join(ARCHITECTURES)})"
        )
    if cfg.architecture == "topk" and cfg.k > cfg.d_sae:
        raise SteerError(f"k={cfg.k} is larger than d_sae={cfg.d_sae}")
    if cfg.l1_coefficient < 0:
        raise SteerError(f"l1_coefficient must be >= 0, got {cfg.l1_coefficient}")
    model = model if model is not None else load_model(cfg.model, device="cpu")
    if not 0 <= cfg.layer < model.n_layers:
        raise SteerError(f"layer {cfg.layer} out of range (model has {model.n_layers})")
    files = source_files(cfg.data)
    bar = None
    if progress:

        def report(done: int, total: int, stats: Any) -> None:
            nonlocal bar
            bar = bar or _bar(total, "collect", "win", True)
            _set_bar(bar, done)

    _windows, cache = collect_activations(cfg, model, progress=report if progress else None)
    if bar is not None:
        bar.close()
    if cache.n_rows < cfg.batch_size:
        raise SteerError(f"{cache.n_rows} activations collected, fewer than one batch")

    sample = cache.rows(16384, seed=cfg.seed)
    if cfg.architecture == "standard":
        trainer: _Trainer = _StandardTrainer(
            cfg, model.d_model, sample, resample_source=lambda n, seed: cache.rows(n, seed=seed)
        )
    else:
        trainer = _Trainer(cfg, model.d_model, sample)
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else _default_dir("checkpoints", cfg)
    ckpt_file = ckpt_dir / "checkpoint.pt"
    if cfg.resume and ckpt_file.is_file():
        state = torch.load(ckpt_file, weights_only=False)
        if state.get("run_key") != _run_key(cfg):
            raise SteerError("checkpoint is from a different config", where=str(ckpt_file))
        trainer.load(state)
        log.info("resuming from step %d", trainer.step)

    per_epoch = cache.batches_per_epoch(cfg.batch_size)

    def checkpoint() -> None:
        # The data position is implied by the step (the stream is a pure function of seed and
        # step); it is written out too so a reader can see where the run stood.
        epoch, batch_in_epoch = divmod(trainer.step, per_epoch)
        position = {"epoch": epoch, "batch_in_epoch": batch_in_epoch}
        try:
            with atomic_path(ckpt_file) as tmp:
                torch.save(
                    {**trainer.state(), "data_position": position, "run_key": _run_key(cfg)}, tmp
                )
        except OSError as exc:  # a full disk: the previous checkpoint is still whole
            reason = exc.strerror or str(exc)
            raise SteerError(
                f"cannot write the checkpoint: {reason}", where=str(ckpt_file)
            ) from exc

    bar = _bar(cfg.total_steps, "train", "step", progress)
    bar.update(trainer.step)
    step = 0  # position in the data stream: epoch e, batch b is step e * per_epoch + b
    for epoch in itertools.count():
        if step >= cfg.total_steps:
            break
        for batch in cache.epoch_batches(
            epoch, cfg.batch_size, seed=cfg.seed, buffer_rows=cfg.buffer_rows
        ):
            if step >= cfg.total_steps:
                break
            if step >= trainer.step:  # replaying the stream up to a resumed step is cheap
                metrics = trainer.train_step(batch)
                bar.update(1)
                if trainer.step % 10 == 0 or trainer.step == cfg.total_steps:
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.4f}",
                        l0=f"{metrics['l0']:.1f}",
                        ev=f"{metrics['ev']:.3f}",
                        dead=f"{metrics['dead']:.3f}",
                    )
                if callback is not None:
                    callback(trainer.step, metrics)
                if trainer.step % cfg.checkpoint_every == 0:
                    checkpoint()
            step += 1
    bar.close()
    checkpoint()

    from steer.sae import SAEConfig, get_architectures

    weights = trainer.raw_weights()
    sae_cfg = SAEConfig(
        architecture=trainer.architecture,
        d_in=model.d_model,
        d_sae=cfg.d_sae,
        k=cfg.k if trainer.architecture == "topk" else None,
        apply_b_dec_to_input=True,
        hf_hook_name=model.hook_name(cfg.layer),
        hook_name=f"blocks.{cfg.layer}.hook_resid_post",
        model_name=model.name,
    )
    sae = get_architectures()[trainer.architecture](sae_cfg)
    with torch.no_grad():
        for name, tensor in weights.items():
            getattr(sae, name).copy_(tensor)
    meta = {
        "layer": cfg.layer,
        "context_size": cfg.ctx_len,
        # SAELens reads dataset_path as one string; the files and their hashes go beside it.
        "dataset_path": "; ".join(str(d) for d in cfg.data),
        "data_files": [{"path": str(f), "sha256": file_sha256(f)} for f in files],
        **_hf_metadata(cfg.data),
        "prepend_bos": False,  # windows are cut from packed documents, no BOS added
        "training_tokens": trainer.step * cfg.batch_size,
        "unique_tokens": cache.n_rows,
        "seed": cfg.seed,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "extra_metadata"},
        "input_scale_folded": trainer.scale,
        "outlier_rule": OUTLIER_RULE.format(factor=cfg.outlier_factor),
        "collection_stats": cache.meta.get("stats", {}),
        "final_train_metrics": trainer.last_metrics,
        **trainer.extra_metadata(),
        **cfg.extra_metadata,
    }
    storage = None
    if cfg.storage_dtype is not None:
        storage = parse_dtype(cfg.storage_dtype)
        meta["weights_stored_as"] = cfg.storage_dtype
    save_sae(
        sae,
        cfg.out_dir,
        sparsity=trainer.log10_density(),
        extra_metadata=meta,
        storage_dtype=storage,
    )
    return Path(cfg.out_dir)


def _bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def _set_bar(bar: Any, done: int) -> None:
    bar.update(done - bar.n)
