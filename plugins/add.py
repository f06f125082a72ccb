"""Built-in intervention ``add``: nudge along the features' decoder directions.

Unlike ``clamp``, this acts even where a feature is off: the residual stream moves by
``value * W_dec[feature]`` on every edited token, whatever the feature's activation was.
"""

from steer import InterventionType, hookimpl


def add(acts, value):
    return acts + value


@hookimpl
def steer_register_interventions(register):
    register(
        InterventionType(
            "add",
            add,
            "add `value` to the features (a nudge along their decoder directions, even when off)",
            requires_value=True,
        )
    )
