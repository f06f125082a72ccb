"""Built-in attribution methods for ``steer pinpoint``: attribution patching and integrated
gradients.

Both estimate, for every node, the change of the metric when that node alone moves from its
clean value ``a`` to its target ``t`` (0, the mean, or a counterfactual):

* ``attribution_patching``: the first-order estimate ``grad(a) . (t - a)``, from one forward
  and one backward for all nodes at once.
* ``integrated_gradients``: ``mean_k grad(a + alpha_k (t - a)) . (t - a)`` over ``steps``
  midpoints ``alpha_k = (k + 1/2) / steps``; it follows the metric's curvature along the path,
  at ``steps`` times the cost.
"""

from __future__ import annotations

from steer import hookimpl


def attribution_patching(ctx):
    return ctx.score(ctx.gradients(0.0))


def integrated_gradients(ctx):
    from steer import Gradients  # here, not at the top: loading plugins must not load torch

    total = None
    for k in range(ctx.steps):
        g = ctx.gradients((k + 0.5) / ctx.steps)
        if total is None:
            total = g
            continue
        total = Gradients(
            nodes=[a + b for a, b in zip(total.nodes, g.nodes, strict=True)],
            error=None
            if g.error is None
            else [a + b for a, b in zip(total.error, g.error, strict=True)],
        )
    mean = Gradients(
        nodes=[t / ctx.steps for t in total.nodes],
        error=None if total.error is None else [t / ctx.steps for t in total.error],
    )
    return ctx.score(mean)


@hookimpl
def steer_register_attribution_methods(register):
    from steer import AttributionMethod

    register(
        AttributionMethod(
            "attribution_patching",
            attribution_patching,
            "gradient x (target - clean), one forward + backward",
        )
    )
    register(
        AttributionMethod(
            "integrated_gradients",
            integrated_gradients,
            "path-averaged gradient x (target - clean), `steps` forwards + backwards",
        )
    )
