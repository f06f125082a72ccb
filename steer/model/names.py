"""What a model name in a recipe or on the command line can be, checked without loading it:
the bundled model, a ``.gguf`` file, a local Hugging Face folder, or a Hub id that is in the
Hugging Face cache or could be downloaded from here.

A misspelled name fails at once, in one line, instead of after a minute of network retries.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from pathlib import Path

from steer.errors import SteerError

HUB_HOST = "huggingface.co"
# What a Hub id looks like: "gpt2", "owner/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def offline() -> bool:
    """Whether the user asked for no network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds ``repo_id``'s config (so it loads offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id: not in the cache
        return False
    return isinstance(found, str)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded from here, or ``None`` when it can (or when only trying a
    download can tell). Reads no weights and opens no network connection."""
    from steer.model.load import DEFAULT_MODEL, bundled_gguf_path

    if name == DEFAULT_MODEL:
        try:
            bundled_gguf_path()
        except SteerError as exc:
            return str(exc)
        return None
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        return None if path.is_file() else f"model file not found: {name}"
    if path.exists():
        return (
            None
            if (path / "config.json").is_file()
            else f"not a model folder (no config.json): {name}"
        )
    if not _HUB_ID.match(name):
        return f"model {name!r} is not the bundled model, a .gguf file, a local folder or a Hub id"
    if in_hub_cache(name):
        return None
    if difflib.get_close_matches(name.lower(), [DEFAULT_MODEL], n=1, cutoff=0.8):
        return f"unknown model {name!r} (did you mean {DEFAULT_MODEL!r}, the bundled model?)"
    if offline():
        return (
            f"model {name!r} is not in the Hugging Face cache, and HF_HUB_OFFLINE is set: it "
            "would need a download"
        )
    return None


def require_downloadable(name: str) -> None:
    """Before loading a Hub id that is not cached: fail in one line when no download can
    happen (offline by request, or the Hub unreachable), instead of retrying for a minute."""
    if in_hub_cache(name):
        return
    if offline():
        raise SteerError(
            "not in the Hugging Face cache, and HF_HUB_OFFLINE is set (give a local folder, "
            "or unset it to download)",
            where=name,
        )
    if not hub_reachable():
        raise SteerError(
            f"not in the Hugging Face cache, and {HUB_HOST} cannot be reached (offline?)",
            where=name,
        )
