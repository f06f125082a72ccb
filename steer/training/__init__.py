"""Train sparse autoencoders on a model's residual stream, and evaluate them.

* :mod:`~steer.training.config`: every training setting, declared once (:class:`TrainConfig`).
* :mod:`~steer.training.recipe`: training recipes (YAML) into a :class:`TrainConfig`.
* :mod:`~steer.training.activations`, :mod:`~steer.training.cache`: activations, streamed and
  cached on disk (resumable).
* :mod:`~steer.training.trainer`, :mod:`~steer.training.topk`, :mod:`~steer.training.standard`:
  the optimisation, per architecture.
* :mod:`~steer.training.run`: one run in named steps, :func:`train_sae`.
* :mod:`~steer.training.evaluate`: reconstruction and downstream-loss metrics.
"""

from __future__ import annotations

from steer.training.config import TrainConfig
from steer.training.evaluate import evaluate_sae
from steer.training.run import TrainingRun, train_sae

__all__ = ["TrainConfig", "TrainingRun", "evaluate_sae", "train_sae"]
