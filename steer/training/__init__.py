"""Train sparse autoencoders on a model's residual stream, and evaluate them.

* :mod:`~steer.training.config`: every training setting, declared once (:class:`TrainConfig`).
* :mod:`~steer.training.recipe`: training recipes (YAML) into a :class:`TrainConfig`.
* :mod:`~steer.training.activations`, :mod:`~steer.training.cache`: activations, streamed and
  cached on disk (resumable).
* :mod:`~steer.training.trainer`, :mod:`~steer.training.topk`, :mod:`~steer.training.standard`:
  the optimisation, per architecture.
* :mod:`~steer.training.run`: one run in named steps, :func:`train_sae`.
* :mod:`~steer.training.evaluate`: reconstruction and downstream-loss metrics.

Nothing is imported here: ``steer train`` reads the settings (:mod:`~steer.training.config`)
to build its flags, and that must not load torch. The public names are ``steer.TrainConfig``,
``steer.train_sae`` and ``steer.evaluate_sae``.
"""
