"""Small durable-file helpers shared by every layer that keeps state in files.

A metadata file (checkpoints, topic and queue definitions, producer state) is replaced
atomically: written to a temporary file beside it, fsynced, renamed over the old one, and the
directory fsynced, so a crash leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (creations, renames, removals) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; durable on return when ``fsync``.

    ``fsync=False`` keeps the atomicity (readers never see a torn file) for files that are
    rebuilt anyway after a crash.
    """
    raw = data.encode() if isinstance(data, str) else data
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    if fsync:
        fsync_dir(path.parent)
