"""Durable, all-or-nothing writes: the one way mmindex replaces a file or a folder.

A file is written under a temporary name beside its target, fsynced, renamed over the
target, and the folder is fsynced (a rename is durable only once its folder is). A folder is
built under a staging name and swapped in the same way; the old one is moved aside before the
new one takes its name, so a crash leaves the old or the new, never neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mmindex.core import faults


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: str | Path, data: bytes | str, faults_as: str | None = None) -> None:
    """Replace `target` with `data` (text is written as UTF-8). `faults_as` names the fault
    points a crash trial can arm half-way through and after the fsync (core/faults.py)."""
    target = Path(target)
    data = data.encode() if isinstance(data, str) else data
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data[: len(data) // 2])
            if faults_as:
                faults.point(f"{faults_as}.midway")  # a crash or a full disk mid-file
            handle.write(data[len(data) // 2:])
            handle.flush()
            os.fsync(handle.fileno())
        if faults_as:
            faults.point(f"{faults_as}.synced")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


def move_atomically(source: str | Path, target: str | Path) -> None:
    """Make the finished file `source` durable, then rename it over `target`."""
    fsync_path(source)
    os.replace(source, target)
    fsync_path(Path(target).parent)


@contextlib.contextmanager
def staged_directory(dest: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside `dest` to build in; when the block succeeds it becomes
    `dest`. With replace=False an existing `dest` wins and the staged copy is dropped (two
    processes building the same cache entry). On an error nothing of the staging remains."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging-"))
    try:
        yield staging
        _sync_tree(staging)
        _swap_in(staging, dest, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        fsync_path(path)
    fsync_path(folder)


def _swap_in(staging: Path, dest: Path, replace: bool) -> None:
    aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        if not replace:
            return
        os.rename(dest, aside)
    try:
        os.rename(staging, dest)
    except OSError:
        if aside.exists() and not dest.exists():
            os.rename(aside, dest)  # put the old one back
        if replace or not dest.exists():
            raise
    fsync_path(dest.parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path beside `target` for a library that writes by file name (safetensors,
    FAISS, Parquet, matplotlib); when the block succeeds it durably replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        move_atomically(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
