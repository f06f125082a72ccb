"""Resumable results: each arm's record in its own JSON file, written atomically after each
stage (generation, fluency, capability, each judge), so a run that fails midway (a judge's
network or quota) keeps every finished arm and stage, and a rerun of the same command does
only what is missing."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from steer.io import atomic_write_text

log = logging.getLogger(__name__)


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of what an arm's results depend on (the recipe, prompts, concept texts,
    generation settings): a record made under other settings is not reused."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ArmStore:
    """Arm name -> record, kept in ``folder/arms/NAME.json`` (in memory without a folder)."""

    def __init__(self, folder: Path | None, key: str):
        self.folder = folder
        self.key = key
        self.memory: dict[str, dict] = {}

    def path(self, name: str) -> Path | None:
        """Where arm ``name``'s record lives (``None`` in memory)."""
        return None if self.folder is None else self.folder / "arms" / f"{name}.json"

    def load(self, name: str) -> dict:
        """The arm's record so far (empty when there is none, or it was made with other
        settings)."""
        path = self.path(name)
        if path is None:
            return self.memory.get(name, {})
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s: unreadable; computing the arm again", path)
            return {}
        if not isinstance(record, dict) or record.get("fingerprint") != self.key:
            log.warning("%s: made with other settings; computing the arm again", path)
            return {}
        return record

    def save(self, name: str, record: dict) -> None:
        """Write the arm's record (atomically: a crash leaves the old file or the new one)."""
        record["fingerprint"] = self.key
        path = self.path(name)
        if path is None:
            self.memory[name] = record
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
