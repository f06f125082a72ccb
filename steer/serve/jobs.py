"""One completion in flight in the server (a request with ``n`` choices is ``n`` jobs), and
the updates the engine sends back for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steer.serve.sampling import Sampling, TextStream
from steer.steering.plan import RowSteps

# finish_reason values beyond OpenAI's "stop" and "length": a monitor's `stop` action ended
# the completion (the name OpenAI uses when content is withheld, so strict clients accept it),
# the request's time ran out, or the server failed.
MONITOR_STOP = "content_filter"
TIMEOUT = "timeout"
ERROR = "error"
CANCELLED = "cancelled"  # the client disconnected: nobody reads this one


@dataclass
class Update:
    """What one engine step produced for one job."""

    index: int  # the choice index
    text: str = ""
    token: int | None = None
    logprob: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Job:
    """A completion to generate: prompt token ids, sampling, steering, and where its updates
    go (``emit`` is called on the engine's thread; it must only hand the update over)."""

    prompt_ids: list[int]
    sampling: Sampling
    steps: RowSteps
    emit: Callable[[Update], None]
    index: int = 0
    deadline: float | None = None  # time.monotonic() after which it ends with TIMEOUT
    cancelled: bool = False  # set from another thread when the client went away
    # engine state
    generated: list[int] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)  # monitor groups that fired on it
    stream: TextStream | None = None
    generator: torch.Generator | None = None
    pending_events: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def send(self, **kwargs: Any) -> None:
        """Emit an update carrying the events gathered since the last one."""
        events, self.pending_events = self.pending_events, []
        self.emit(
            Update(
                index=self.index,
                events=events,
                prompt_tokens=len(self.prompt_ids),
                completion_tokens=len(self.generated),
                **kwargs,
            )
        )

    def finish(self, reason: str, *, error: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        text = self.stream.flush() if self.stream is not None else ""
        self.send(text=text, finish_reason=reason, error=error)
