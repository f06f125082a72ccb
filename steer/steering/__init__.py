"""Steering: run a recipe's interventions and monitors during generation.

* :mod:`~steer.steering.recipe`: the recipe schema; :mod:`~steer.steering.check`: checking it
  against the installed plugins and the SAEs, without loading weights.
* :mod:`~steer.steering.interventions`, :mod:`~steer.steering.monitors`: what plugins register.
* :mod:`~steer.steering.plan`: a batch's per-site plan; :mod:`~steer.steering.edit`: the
  per-token work at one site; :mod:`~steer.steering.live`: monitor events as they happen.
* :mod:`~steer.steering.attach`, :mod:`~steer.steering.generation`,
  :mod:`~steer.steering.results`, :mod:`~steer.steering.engine` (:class:`Steerer`).

Nothing is imported here, so that checking a recipe stays light; the public names are
``steer.Steerer``, ``steer.load_recipe`` and the rest of :mod:`steer`.
"""
