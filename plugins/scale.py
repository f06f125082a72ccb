"""Built-in intervention ``scale``: multiply feature activations (0 ablates, 2 doubles)."""

from steer import InterventionType, hookimpl


def scale(acts, value):
    return acts * value


@hookimpl
def steer_register_interventions(register):
    register(
        InterventionType(
            "scale", scale, "multiply the features' activations by `value`", requires_value=True
        )
    )
