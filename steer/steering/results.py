"""What a steering run produces: per prompt, the baseline and steered completions and what the
monitors saw."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PromptResult:
    """One prompt's completions and the monitor events of its steered run."""

    prompt: str
    baseline: str | None
    steered: str
    events: list[dict[str, Any]] = field(default_factory=list)
    # The first event of each monitor whose action is not `log`: where a warning, a stop or a
    # conditional intervention started.
    actions: list[dict[str, Any]] = field(default_factory=list)
    # Tokens and per-token monitor scores (see LiveMonitor.trace); None without monitors.
    trace: dict[str, Any] | None = None


@dataclass
class RunResults:
    """What ``steer run`` produces: one entry per prompt, plus timings in seconds."""

    results: list[PromptResult]
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "timing": dict(self.timing)}
