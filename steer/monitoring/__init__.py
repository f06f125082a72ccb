"""Safety monitoring: score texts with a recipe's watched SAE feature groups
(:mod:`steer.monitoring.score`), a linear-probe baseline on the same layer
(:mod:`steer.monitoring.probe`), events as they happen during generation
(:mod:`steer.steering.live`), the JSONL event log (:mod:`steer.monitoring.eventlog`) and the
HTML report of a monitored run (:mod:`steer.monitoring.report`)."""
