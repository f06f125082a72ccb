"""Built-in intervention ``ablate``: switch features off (set their activation to 0)."""

from steer import InterventionType, hookimpl


def ablate(acts, value):
    return acts.new_zeros(acts.shape)


@hookimpl
def steer_register_interventions(register):
    register(InterventionType("ablate", ablate, "set the features to 0 (switch them off)"))
