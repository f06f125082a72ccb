"""Built-in intervention ``clamp``: pin features to a fixed activation."""

from steer import InterventionType, hookimpl


def clamp(acts, value):
    return acts.new_full(acts.shape, value)


@hookimpl
def steer_register_interventions(register):
    register(
        InterventionType(
            "clamp", clamp, "pin the features to `value` on every edited token", requires_value=True
        )
    )
