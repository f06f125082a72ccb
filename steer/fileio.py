"""Atomic file and folder writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every filesystem allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The caller writes the whole file to the yielded path. If the block raises (a full disk, a
    crash in the writer), the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it becomes ``target``.

    An existing ``target`` is swapped out only after the new folder is complete, so an
    interrupted save never leaves a folder with some files new and some missing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        file_mode = 0o666 & ~_umask()
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
                # Some writers (safetensors) create private 0600 files; use a plain open()'s mode.
                os.chmod(child, file_mode)
        # mkdtemp makes the folder private (0700); give it the mode a plain mkdir() would.
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(target: str | os.PathLike, *, what: str = "file") -> None:
    """Raise a one-line :class:`SteerError` now if ``target`` could not be written later.

    Used before long work, so that a bad output path fails in milliseconds rather than after
    the work: ``target`` must not be a folder, and its folder must exist (a typo should fail,
    not create a stray folder tree) and be writable.
    """
    from steer.errors import SteerError

    target = Path(target)
    if target.is_dir():
        raise SteerError(f"cannot write the {what} here: it is a folder", where=str(target))
    parent = target.parent
    if not parent.is_dir():
        state = "is not a folder" if parent.exists() else "does not exist"
        raise SteerError(f"cannot write the {what}: {parent} {state}", where=str(target))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SteerError(
            f"cannot write the {what}: no permission to write in {parent}", where=str(target)
        )
