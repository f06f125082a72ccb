"""The JSONL event log of a monitored run: one JSON object per line, written as it happens.

The file is opened for appending (several runs can share one log; each line carries its run's
id) and every line goes to the operating system in a single ``write`` call with no buffer in
between, so a process killed mid-run leaves only whole lines behind: everything reported
before the kill is there and parses. Line types:

* ``{"type": "run", "run": ID, "time": ..., "recipe": ..., "model": ..., "groups": {...}}``
  when the run starts;
* ``{"type": "event", "run": ID, "prompt": 0, "group": ..., "phase": "generated",
  "token_index": 5, "token": ..., "feature": ..., "activation": ..., "action": ..., "first": ...}``
  for each monitor hit, right after the forward pass that read it;
* ``{"type": "end", "run": ID, "prompts": N, "events": N, "actions": [...], "seconds": ...}``
  when the run has finished (its absence means the run did not finish).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.io import check_writable


class EventLog:
    """An append-only JSONL file. Opening it fails at once (one line, the path) if it cannot
    be written, so a run with a bad log path fails before it generates anything."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_writable(self.path, what="event log")
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as exc:
            raise SteerError(
                f"cannot write the event log: {exc.strerror}", where=str(self.path)
            ) from None
        self.run_id = uuid.uuid4().hex[:12]
        self.n_events = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one line; it is in the file (the OS's page cache) when this returns."""
        if self._fd is None:
            raise ValueError("the event log is closed")
        data = (json.dumps({**record, "run": self.run_id}, ensure_ascii=False) + "\n").encode()
        try:
            while data:  # a regular file takes it in one write; loop for the pathological case
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:  # e.g. a full disk: stop the run, keep every line written so far
            raise SteerError(
                f"cannot write the event log: {exc.strerror}", where=str(self.path)
            ) from None

    def started(self, recipe: Any, *, source: str | None = None) -> None:
        """The run's first line: when, which recipe and model, and what each group watches."""
        groups = {
            name: {
                "sae": spec.sae,
                "features": list(spec.features),
                "monitor": spec.plugin,
                **spec.settings,
                "action": spec.action_name,
                "positions": spec.positions,
            }
            for name, spec in zip(recipe.group_names(), recipe.monitors, strict=True)
        }
        self.write(
            {
                "type": "run",
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "recipe": source,
                "model": recipe.model,
                "prompts": len(recipe.prompts),
                "groups": groups,
            }
        )

    def event(self, event: dict[str, Any]) -> None:
        """One monitor hit (an event dict of :class:`steer.steering.live.LiveMonitor`)."""
        self.n_events += 1
        self.write({"type": "event", **event})

    def finished(self, results: Any) -> None:
        """The run's last line: counts, every action taken, and the generation time."""
        actions = [
            {"prompt": i, **action}
            for i, result in enumerate(results.results)
            for action in result.actions
        ]
        self.write(
            {
                "type": "end",
                "prompts": len(results.results),
                "events": self.n_events,
                "actions": actions,
                "seconds": round(results.timing.get("steered_s", 0.0), 3),
            }
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
