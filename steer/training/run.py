"""Train a sparse autoencoder on residual-stream activations: one run, in named steps.

Pipeline: token windows -> activation cache (resumable, float16 on disk) -> shuffled batches
-> SAE trained with Adam in a scaled space -> saved in SAELens format with the scale folded
back, so the saved SAE works on raw activations. Checkpoints hold everything needed to
continue bit-for-bit: the batch at step s is a pure function of (seed, s), so resuming replays
the data stream. They are tensors in safetensors and the rest in JSON (see
:mod:`steer.training.checkpoint`): reading one never runs code.

:class:`TrainingRun` splits a run into its steps -- set up (check the settings, collect the
activations, build the trainer), :meth:`~TrainingRun.load_state` (resume),
:meth:`~TrainingRun.fit` (the loop), :meth:`~TrainingRun.save` (the SAE and its metadata);
:func:`train_sae` runs them all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from steer.corpus.documents import HFSource, source_files
from steer.corpus.windows import build_windows
from steer.distributed import World, agree, barrier, world
from steer.errors import SteerError
from steer.io import file_sha256
from steer.model.layouts import check_site, site_width
from steer.model.positions import OUTLIER_RULE
from steer.training.batchtopk import BatchTopKTrainer
from steer.training.cache import ActivationCache, build_activation_cache
from steer.training.checkpoint import (
    CHECKPOINT_DIRNAME,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from steer.training.config import TrainConfig, applies
from steer.training.shards import build_activation_caches
from steer.training.standard import StandardTrainer
from steer.training.topk import TopKTrainer
from steer.training.trainer import Trainer

log = logging.getLogger(__name__)

# Settings that change neither the activations nor the weights a run produces: a run that
# differs only in these continues the same cache and checkpoints.
_VOLATILE = ("checkpoint_every", "checkpoint_dir", "cache_dir", "metadata", "storage_dtype")

StepCallback = Callable[[int, dict[str, float]], None]


def run_key(cfg: TrainConfig) -> str:
    """What identifies a run's activations and checkpoints: every setting that changes them
    (the other architecture's settings and the volatile ones left out)."""
    keep = cfg.model_dump(mode="json", exclude=set(_VOLATILE))
    for name in list(keep):
        if not applies(name, cfg.architecture):
            del keep[name]
    if keep.get("site") == "resid_post":
        del keep["site"]  # the site every run had before there was a choice: same keys as then
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def default_dir(kind: str, cfg: TrainConfig) -> Path:
    """A run's folder of ``kind`` (activations, checkpoints) in the steer cache."""
    from steer.model import cache_dir

    return cache_dir() / kind / f"{Path(cfg.out).name}-{run_key(cfg)}"


def training_windows(cfg: TrainConfig, tokenizer: Any) -> torch.Tensor:
    """The token windows a run of ``cfg`` collects: its sources mixed by their weights, cut
    and drawn with its seed (the same windows for every layer and every process)."""
    return build_windows(
        tokenizer,
        cfg.sources(),
        ctx_len=cfg.ctx_len,
        n_tokens=cfg.tokens.collect,
        weights=cfg.weights(),
        seed=cfg.seed,
    )


def collect_activations(
    cfg: TrainConfig,
    model: Any,
    *,
    progress: Callable[[int, int, Any], None] | None = None,
    world: World | None = None,
) -> tuple[torch.Tensor, ActivationCache]:
    """Cut ``cfg``'s token windows and run them through the model into the (resumable)
    activation cache. Returns the windows and the cache; a complete cache is reused as is.
    ``progress(done, total, stats)`` is called as windows are processed. Under torchrun
    (``world`` of several ranks) the ranks share the forward passes and build the same cache
    (:mod:`steer.training.shards`)."""
    windows = training_windows(cfg, model.tokenizer)
    cache_path = Path(cfg.cache_dir) if cfg.cache_dir else default_dir("activations", cfg)
    if world is not None and world.distributed:
        (cache,) = build_activation_caches(
            model,
            [cfg.hook()],
            windows,
            [cache_path],
            world=world,
            outlier_factor=cfg.outlier_factor,
            batch_windows=cfg.batch_windows,
            progress=None if progress is None else lambda done, total: progress(done, total, None),
        )
        return windows, cache
    cache = build_activation_cache(
        model,
        cfg.hook(),
        windows,
        cache_path,
        outlier_factor=cfg.outlier_factor,
        batch_windows=cfg.batch_windows,
        progress=progress,
    )
    return windows, cache


class TrainingRun:
    """One training run of ``cfg`` on ``model`` (default: load ``cfg.model`` on the CPU).

    Constructing it is the set-up step: the settings are checked against the model, the
    activations collected (or found complete in the cache) and the trainer built.

    Under torchrun every rank constructs its own run of the same ``cfg``: they share the
    collection, each trains on its slice of every global batch of ``batch_size`` rows (which
    must split evenly), and rank 0 alone shows progress and writes checkpoints and the SAE.
    Checkpoints hold no trace of the world size, so a run resumes under any number of ranks
    that divides the batch.
    """

    def __init__(self, cfg: TrainConfig, *, model: Any = None, progress: bool = True):
        from steer.model import load_model

        check_output(Path(cfg.out))  # before minutes of work, not after
        self.world = world()
        if cfg.batch_size % self.world.size:
            raise SteerError(
                f"batch_size {cfg.batch_size} does not split evenly over "
                f"{self.world.size} processes",
                where="torchrun",
            )
        self.cfg = cfg
        self.progress = progress and self.world.is_main
        self.model = model if model is not None else load_model(cfg.model, device="cpu")
        if not 0 <= cfg.layer < self.model.n_layers:
            raise SteerError(f"layer {cfg.layer} out of range (model has {self.model.n_layers})")
        check_site(self.model.hf.config, cfg.hook())
        self.files = source_files(cfg.sources())
        self.cache = self._collect()
        if self.cache.n_rows < cfg.batch_size:
            raise SteerError(f"{self.cache.n_rows} activations collected, fewer than one batch")
        self.trainer = self._make_trainer()
        ckpt_dir = (
            Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else default_dir("checkpoints", cfg)
        )
        self.checkpoint_folder = ckpt_dir / CHECKPOINT_DIRNAME

    def _collect(self) -> ActivationCache:
        bar = None

        def report(done: int, total: int, stats: Any) -> None:
            nonlocal bar
            bar = bar or _bar(total, "collect", "win", True)
            bar.update(done - bar.n)

        _windows, cache = collect_activations(
            self.cfg, self.model, progress=report if self.progress else None, world=self.world
        )
        if bar is not None:
            bar.close()
        return cache

    def _make_trainer(self) -> Trainer:
        cfg, cache = self.cfg, self.cache
        sample = cache.rows(16384, seed=cfg.seed)
        if cfg.architecture == "standard":
            return StandardTrainer(
                cfg,
                self.d_in,
                sample,
                resample_source=lambda n, seed: cache.rows(n, seed=seed),
                world=self.world,
            )
        if cfg.architecture == "batchtopk":
            return BatchTopKTrainer(cfg, self.d_in, sample, world=self.world)
        return TopKTrainer(cfg, self.d_in, sample, world=self.world)

    @property
    def d_in(self) -> int:
        """The width of the site the SAE reads."""
        return site_width(self.model.hf.config, self.cfg.hook())

    def load_state(self) -> bool:
        """Continue from the last checkpoint, if there is one; returns whether there was.
        A checkpoint that cannot be read or does not fit this run is a one-line SteerError."""
        folder = find_checkpoint(self.checkpoint_folder)
        if folder is None:
            return False
        state = load_checkpoint(folder)
        if state.values.get("run_key") != run_key(self.cfg):
            raise SteerError("checkpoint is from a different config", where=str(folder))
        try:
            self.trainer.load(state)
        except CheckpointError as exc:
            raise SteerError(
                f"checkpoint does not fit this run: {exc}", where=str(folder)
            ) from None
        log.info("resuming from step %d", self.trainer.step)
        return True

    def checkpoint(self) -> None:
        """Write the trainer's state atomically; a full disk leaves the previous one whole.
        Rank 0 writes; every rank fails together when it cannot."""
        failure = None
        if self.world.is_main:
            try:
                self._write_checkpoint()
            except SteerError as exc:
                failure = exc
        agree(self.world, failure is None, str(failure) if failure else None)

    def _write_checkpoint(self) -> None:
        # The data position is implied by the step (the stream is a pure function of seed and
        # step); it is written out too so a reader can see where the run stood.
        per_epoch = self.cache.batches_per_epoch(self.cfg.batch_size)
        epoch, batch_in_epoch = divmod(self.trainer.step, per_epoch)
        state = self.trainer.state()
        state.values["data_position"] = {"epoch": epoch, "batch_in_epoch": batch_in_epoch}
        state.values["run_key"] = run_key(self.cfg)
        try:
            save_checkpoint(self.checkpoint_folder, state)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SteerError(
                f"cannot write the checkpoint: {reason}", where=str(self.checkpoint_folder)
            ) from exc

    def fit(self, callback: StepCallback | None = None) -> None:
        """Train to ``total_steps``, checkpointing every ``checkpoint_every`` steps and at the
        end. ``callback(step, metrics)`` runs after every step."""
        cfg, trainer = self.cfg, self.trainer
        bar = _bar(cfg.total_steps, "train", "step", self.progress)
        bar.update(trainer.step)
        for batch in self._stream():
            metrics = trainer.train_step(batch)
            bar.update(1)
            if trainer.step % 10 == 0 or trainer.step == cfg.total_steps:
                bar.set_postfix({k: f"{metrics[k]:.{n}f}" for k, n in _SHOWN.items()})
            if callback is not None:
                callback(trainer.step, metrics)
            if trainer.step % cfg.checkpoint_every == 0:
                self.checkpoint()
        bar.close()
        self.checkpoint()

    def _stream(self):
        """The batches from the trainer's step to the last: epoch e, batch b is step
        ``e * per_epoch + b``; a resumed run replays the stream up to its step (cheap).
        Under torchrun every rank reads the same stream and keeps its slice of each batch."""
        cfg, rank, size = self.cfg, self.world.rank, self.world.size
        share = cfg.batch_size // size
        step = 0
        for epoch in itertools.count():
            for batch in self.cache.epoch_batches(
                epoch, cfg.batch_size, seed=cfg.seed, buffer_rows=cfg.buffer_rows
            ):
                if step >= cfg.total_steps:
                    return
                if step >= self.trainer.step:
                    yield batch[rank * share : (rank + 1) * share] if size > 1 else batch
                step += 1
            if step >= cfg.total_steps:
                return

    def save(self) -> Path:
        """Save the SAE in SAELens format to ``cfg.out`` with what made it in its metadata."""
        from steer.sae import SAEConfig, get_architectures, save_sae
        from steer.sae.base import parse_dtype

        cfg, trainer, model = self.cfg, self.trainer, self.model
        hook = cfg.hook()
        sae_cfg = SAEConfig(
            architecture=trainer.saved_architecture,
            d_in=site_width(model.hf.config, hook),
            d_sae=cfg.d_sae,
            k=cfg.k if trainer.architecture == "topk" else None,
            apply_b_dec_to_input=True,
            # The HF path names the residual stream after a block; other sites go by their
            # TransformerLens name alone (steer.model.sites reads it back).
            hf_hook_name=model.hook_name(cfg.layer) if hook.kind == "resid_post" else None,
            hook_name=hook.name,
            model_name=model.name,
        )
        sae = get_architectures()[trainer.saved_architecture](sae_cfg)
        with torch.no_grad():
            for name, tensor in trainer.raw_weights().items():
                getattr(sae, name).copy_(tensor)
        meta = self.metadata()
        storage = None
        if cfg.storage_dtype is not None:
            storage = parse_dtype(cfg.storage_dtype)
            meta["weights_stored_as"] = cfg.storage_dtype
        save_sae(
            sae,
            cfg.out,
            sparsity=trainer.log10_density(),
            extra_metadata=meta,
            storage_dtype=storage,
        )
        return Path(cfg.out)

    def metadata(self) -> dict[str, Any]:
        """What the saved SAE's metadata records about the run that made it."""
        cfg, trainer, cache = self.cfg, self.trainer, self.cache
        sources = cfg.sources()
        hf = [asdict(s) for s in sources if isinstance(s, HFSource)]
        return {
            "layer": cfg.layer,
            **({"site": cfg.site} if cfg.site != "resid_post" else {}),
            "context_size": cfg.ctx_len,
            # SAELens reads dataset_path as one string; the files and their hashes go beside it.
            "dataset_path": "; ".join(str(s) for s in sources),
            "data_files": [{"path": str(f), "sha256": file_sha256(f)} for f in self.files],
            **({"hf_datasets": hf} if hf else {}),
            "prepend_bos": False,  # windows are cut from packed documents, no BOS added
            "training_tokens": trainer.step * cfg.batch_size,
            "unique_tokens": cache.n_rows,
            "seed": cfg.seed,
            "train_config": cfg.model_dump(mode="json", exclude={"metadata"}),
            "input_scale_folded": trainer.scale,
            "outlier_rule": OUTLIER_RULE.format(factor=cfg.outlier_factor),
            "collection_stats": cache.meta.get("stats", {}),
            "final_train_metrics": trainer.last_metrics,
            **trainer.extra_metadata(),
            **cfg.metadata,
        }


_SHOWN = {"loss": 4, "l0": 1, "ev": 3, "dead": 3}  # progress-bar metrics and their decimals


def check_output(out: Path) -> None:
    """Refuse, before minutes of work, an ``out`` that saving would refuse after them
    (:func:`steer.sae.save_sae`): a file, or a non-empty folder that holds no SAE."""
    if out.exists() and not out.is_dir():
        raise SteerError("is a file, where the SAE folder would go", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "cfg.json").is_file():
        raise SteerError(
            "is a folder that holds no SAE (no cfg.json); choose another --out: steer replaces "
            "an SAE's files, never a folder of other things",
            where=str(out),
        )


def train_sae(
    config: TrainConfig,
    *,
    model: Any = None,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> Path:
    """Collect activations, train an SAE (``config.architecture``) and save it (SAELens
    format) to ``config.out``; returns that folder.

    ``model`` is a loaded :class:`steer.model.LoadedModel` (default: load ``config.model``).
    ``callback(step, metrics)`` runs after every step. With ``resume`` a run continues from its
    last checkpoint (same settings required) and gives the weights of an unbroken run. An
    existing ``out`` folder that holds something other than an SAE is refused at once.
    """
    run = TrainingRun(config, model=model, progress=progress)
    if resume:
        run.load_state()
    run.fit(callback)
    path = run.save() if run.world.is_main else Path(config.out)
    barrier(run.world)  # the SAE is on disk when any rank returns
    return path


def _bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
