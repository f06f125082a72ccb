"""A Hugging Face hub cache folder in huggingface_hub's real layout, filled with local files, so
that code which downloads (``hf_hub_download``, ``snapshot_download``) runs offline with
``HF_HUB_OFFLINE=1`` and finds them, as it would after a real download.

Layout: ``<cache>/models--<org>--<name>/blobs/<sha256>``, ``snapshots/<commit>/<path>`` (a
symlink to the blob) and ``refs/main`` (the commit).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hf_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> Path:
    """Put ``files`` (path in the repo -> a local file or its bytes) into the cache folder
    ``cache`` as repo ``repo_id``'s main revision; returns the snapshot folder."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for rel, source in files.items():
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def populate_from_folder(cache: Path, repo_id: str, folder: Path, prefix: str = "") -> Path:
    """:func:`populate_hf_cache` with every file under ``folder``, at ``prefix/<relative>``."""
    files = {
        str(Path(prefix) / p.relative_to(folder)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return populate_hf_cache(cache, repo_id, files)


def offline_cache_env(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache`` and forbid the network, for the current test."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


__all__ = ["COMMIT", "offline_cache_env", "populate_from_folder", "populate_hf_cache"]
