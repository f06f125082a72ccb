"""Safety monitoring: score texts with a recipe's watched SAE feature groups
(:mod:`steer.monitoring.score`) and a linear-probe baseline on the same layer
(:mod:`steer.monitoring.probe`)."""
