"""Reading the headless browser's console in browser tests (the `browser` fixture lives in
conftest.py)."""

from __future__ import annotations


def severe(driver) -> list[dict]:
    """The browser console's SEVERE entries since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
