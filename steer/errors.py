"""User-facing errors.

Anything a user can cause (a bad recipe, a missing file, an SAE that does not fit the model)
raises :class:`SteerError` with a one-line message that says what is wrong and where. The CLI
prints that line and exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations


class SteerError(Exception):
    """An error caused by user input; its message is one line meant for the user."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
