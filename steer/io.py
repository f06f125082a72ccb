"""Reading and writing files: atomic writes (a reader sees the old file or the new one, never
half of one), YAML for steer's schemas, file hashes, and files that must hold text."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from steer.errors import SteerError


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


def naming(exc: OSError, target: Path, tmp: Path | None = None) -> OSError:
    """``exc`` as the fault of writing ``target``: an error with no file name (``os.write``
    on a full disk) or naming the temporary file says ``target`` instead, so the one line a
    user reads (``error: out/sae: No space left on device``) names what they asked for."""
    if exc.filename is not None and (tmp is None or str(exc.filename) != str(tmp)):
        return exc
    named = OSError(exc.errno, exc.strerror or str(exc), str(target))
    named.__cause__ = exc
    return named


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The caller writes the whole file to the yielded path. If the block raises (a full disk, a
    crash in the writer), the temporary file is removed and ``target`` is left as it was. A
    filesystem fault (full disk, read-only folder, a parent that is a file) is an ``OSError``
    naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise naming(exc, target) from exc
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
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise naming(exc, target, tmp_path) from exc
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
    interrupted save never leaves a folder with some files new and some missing. A filesystem
    fault is an ``OSError`` naming ``target`` (or the file inside it that failed).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise naming(exc, target) from exc
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
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise naming(exc, target, tmp) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike, names: list[str]) -> Iterator[dict[str, Path]]:
    """Temporary paths for the files ``names`` in ``folder``; when the block succeeds each one
    replaces its file, so a reader sees the earlier set or the new one. If the block (or a
    write) fails, none of the files is touched, the temporary ones are removed, and so is
    ``folder`` when this call created it. Other files in ``folder`` are never touched."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise naming(exc, folder) from exc
    try:
        with contextlib.ExitStack() as stack:
            paths = {name: stack.enter_context(atomic_path(folder / name)) for name in names}
            yield paths
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: nothing of the user's is ever removed
        raise


def check_writable(target: str | os.PathLike, *, what: str = "file") -> None:
    """Raise a one-line :class:`SteerError` now if ``target`` could not be written later.

    Used before long work, so that a bad output path fails in milliseconds rather than after
    the work: ``target`` must not be a folder, and its folder must exist (a typo should fail,
    not create a stray folder tree) and be writable.
    """
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


def check_writable_dir(target: str | os.PathLike, *, what: str = "output") -> None:
    """Raise a one-line :class:`SteerError` now if the folder ``target`` could not be created
    or written later: it is a file, or the nearest existing folder above it is a file or not
    writable. (Missing folders in between are created later, as for ``mkdir -p``.)"""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise SteerError(f"is a file, where the {what} folder would go", where=str(target))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SteerError(f"cannot make the {what} folder: {existing} is a file", where=str(target))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SteerError(
            f"cannot write the {what} folder: no permission to write in {existing}",
            where=str(target),
        )


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file (recorded in SAE metadata so a run can be traced to its data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives the same key twice (YAML would silently keep the last one)."""

    def __init__(self, key: Any, line: int):
        self.key, self.line = key, line
        super().__init__(f"duplicate key {key!r} at line {line}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, *, what: str = "recipe") -> Any:
    """The data in the YAML file ``path``, not yet validated.

    A missing or unreadable file, malformed YAML or a key given twice in one mapping is a
    one-line :class:`SteerError`; malformed YAML names the line and column
    (``recipe.yaml:3:7: malformed YAML: ...``), a repeated key its line
    (``recipe.yaml:9: duplicate key 'value'``).
    ``what`` names the kind of file in the messages.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SteerError(f"{what} file not found", where=str(path)) from None
    except IsADirectoryError:
        raise SteerError(f"is a folder, where a {what} file is needed", where=str(path)) from None
    except UnicodeDecodeError as exc:
        raise SteerError(
            f"the {what} is not UTF-8 text (byte {exc.start}: a binary file?)", where=str(path)
        ) from None
    except OSError as exc:
        raise SteerError(
            f"cannot read the {what}: {exc.strerror or exc}", where=str(path)
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise SteerError(f"duplicate key {exc.key!r}", where=f"{path}:{exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SteerError(f"malformed YAML: {problem}", where=at) from None


def check_text_file(path: str | os.PathLike, *, what: str = "file") -> None:
    """Fail fast (before a model loads) on a missing file, one that cannot be read as UTF-8
    text, or one with nothing but whitespace in it. ``what`` names the file in the message
    (``input file not found``, ``no texts in the data file (it is empty)``)."""
    path = Path(path)
    if not path.is_file():
        raise SteerError(f"{what} not found", where=str(path))
    try:
        blank = not path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerError(f"cannot read texts: {exc}", where=str(path)) from None
    if blank:
        raise SteerError(f"no texts in the {what} (it is empty)", where=str(path))


def json_lines(
    path: str | os.PathLike, lines: list[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each non-blank line of a JSON-lines file (``lines``: its text,
    already read), ``where`` being ``path:LINE`` for the caller's own messages. A line that
    is not JSON is a one-line :class:`SteerError` there."""
    if lines is None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError:
            raise SteerError("not a JSON object", where=where) from None
