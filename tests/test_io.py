"""Atomic writes: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from steer.io import atomic_dir, atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "log.jsonl"
    target.write_text("old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_atomic_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "sae"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("crash mid-save")
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o055  # not private to the owner


def test_atomic_dir_gives_private_files_the_normal_mode(tmp_path):
    target = tmp_path / "sae"
    with atomic_dir(target) as tmp:
        fd = os.open(tmp / "weights", os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors does
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((target / "weights").stat().st_mode) == 0o666 & ~umask
