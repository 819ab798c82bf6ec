"""Durable share-partition state: one journal file per share group under ``.meta/share``.

Each entry of ``<dir>/<group>.journal`` is the whole encoded state of one share partition
(``SharePartition.encode_state``: SPSO, SPEO and its runs, small because the in-flight window
is bounded), framed as ``length, crc32, topic id, partition, state``; an empty state is a
tombstone (DeleteShareGroupOffsets). Replay keeps the last entry of each partition, so an entry
needs no predecessor and a torn tail (a crash mid-write) is simply cut off.

Changes are group-committed: a partition's first change of a turn registers it, and
``flush_pending`` (scheduled with ``loop.call_soon``, or called by the owner without a loop)
writes one entry per changed partition with one ``write``. The page cache keeps what was
written across a SIGKILL of the broker, so at most the changes of the running turn come back
(at-least-once); a clean close fsyncs. When the journal outgrows its live entries it is
rewritten with only those (``storage.files.atomic_write``).

Owned by the event loop thread; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

from dari.storage import atomic_write
from dari.streams.share.partition import SharePartition

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")  # payload length, crc32 of the payload
_KEY = struct.Struct(">16si")  # topic id, partition
_SUFFIX = ".journal"
_MIN_REWRITE_BYTES = 1 << 20

Key = tuple[bytes, int]  # (topic id, partition)


def _file_name(group_id: str) -> str:
    return quote(group_id, safe="") + _SUFFIX if group_id else "%00" + _SUFFIX


def _group_of(name: str) -> str:
    stem = name[: -len(_SUFFIX)]
    return "" if stem == "%00" else unquote(stem)


class GroupJournal:
    """The journal of one share group; see the module docstring."""

    def __init__(self, store: ShareStateStore, group_id: str, path: Path) -> None:
        self.store = store
        self.group_id = group_id
        self.path = path
        self._entries: dict[Key, bytes] = {}
        self._dirty: dict[Key, SharePartition] = {}
        self._size = 0
        self._fd: int | None = None
        self._load()

    # -- reading ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            payload = data[start : start + length]
            if len(payload) < length or length < _KEY.size or zlib.crc32(payload) != crc:
                break
            topic_id, partition = _KEY.unpack_from(payload, 0)
            state = payload[_KEY.size :]
            if state:
                self._entries[(topic_id, partition)] = state
            else:
                self._entries.pop((topic_id, partition), None)
            pos = start + length
        if pos < len(data):
            log.warning("share state %s: cut a torn tail at byte %d", self.path, pos)
            with open(self.path, "r+b") as f:
                f.truncate(pos)
        self._size = pos

    def stored(self) -> dict[Key, bytes]:
        """The recovered state of every partition, by (topic id, partition)."""
        return dict(self._entries)

    def partitions(self) -> Iterator[Key]:
        return iter(list(self._entries))

    def state(self, topic_id: bytes, partition: int) -> bytes | None:
        return self._entries.get((topic_id, partition))

    # -- writing ---------------------------------------------------------------------------
    def attach(self, topic_id: bytes, partition: int, share: SharePartition) -> None:
        """Journal ``share``'s changes from now on (and restore its stored state first)."""
        stored = self._entries.get((topic_id, partition))
        if stored is not None:
            share.decode_state(stored)
        key = (topic_id, partition)

        def changed(sp: SharePartition, key: Key = key) -> None:
            self._dirty[key] = sp
            self.store.schedule(self)

        share.on_change = changed
        if share.dirty:
            changed(share)

    def forget(self, topic_id: bytes, partition: int) -> None:
        """Drop a partition's state (its offsets were deleted, or its topic was)."""
        key = (topic_id, partition)
        self._dirty.pop(key, None)
        if key in self._entries:
            del self._entries[key]
            self._write([_frame(key, b"")])

    def flush(self) -> None:
        """Write one entry per partition changed since the last flush."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        frames: list[bytes] = []
        for key, share in dirty.items():
            state = share.encode_state()
            share.mark_clean()
            self._entries[key] = state
            frames.append(_frame(key, state))
        self._write(frames)

    def _write(self, frames: list[bytes]) -> None:
        data = b"".join(frames)
        live = sum(len(v) + _FRAME.size + _KEY.size for v in self._entries.values())
        if self._size + len(data) > max(_MIN_REWRITE_BYTES, 4 * live):
            self._rewrite()
            return
        fd = self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        self._size += len(data)

    def _rewrite(self) -> None:
        self._close_fd()
        data = b"".join(_frame(key, state) for key, state in self._entries.items())
        atomic_write(self.path, data)
        self._size = len(data)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Flush, fsync and close (a clean stop loses nothing)."""
        self.flush()
        if self._fd is not None:
            os.fsync(self._fd)
        self._close_fd()

    def delete(self) -> None:
        """Remove the group's state (DeleteGroups)."""
        self._dirty.clear()
        self._entries.clear()
        self._close_fd()
        self.path.unlink(missing_ok=True)


def _frame(key: Key, state: bytes) -> bytes:
    payload = _KEY.pack(*key) + state
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class ShareStateStore:
    """Every share group's journal under one directory (``<data dir>/.meta/share``).

    Owned by the broker on the event loop thread; not thread-safe. ``flush_pending`` writes
    what changed in the current turn; with a running loop it is scheduled by the first change.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._journals: dict[str, GroupJournal] = {}
        self._pending: set[GroupJournal] = set()
        self._scheduled = False

    def group_ids(self) -> list[str]:
        """Groups with stored state (found on disk or opened since)."""
        found = set(self._journals)
        if self.directory.is_dir():
            for entry in self.directory.iterdir():
                if entry.name.endswith(_SUFFIX):
                    found.add(_group_of(entry.name))
        return sorted(found)

    def journal(self, group_id: str) -> GroupJournal:
        journal = self._journals.get(group_id)
        if journal is None:
            path = self.directory / _file_name(group_id)
            journal = self._journals[group_id] = GroupJournal(self, group_id, path)
        return journal

    def schedule(self, journal: GroupJournal) -> None:
        self._pending.add(journal)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the owner calls flush_pending
        self._scheduled = True
        loop.call_soon(self.flush_pending)

    def flush_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, set()
        for journal in pending:
            journal.flush()

    def delete_group(self, group_id: str) -> None:
        journal = self.journal(group_id)
        self._pending.discard(journal)
        journal.delete()
        del self._journals[group_id]

    def close(self) -> None:
        self.flush_pending()
        for journal in self._journals.values():
            journal.close()
