"""What every HTML page steer writes shares: escaping and how a token reads inside a context.

The pages themselves (feature dashboards, monitor reports, pinpoint curves) are built by their
own subsystems; they take these helpers from here, not from each other.
"""

from __future__ import annotations

import html
from typing import Any


def esc(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def shown_token(token: str) -> str:
    """A token as it should read inside a context: newlines and tabs shown as symbols."""
    return token.replace("\r", "").replace("\n", "⏎").replace("\t", "→")
