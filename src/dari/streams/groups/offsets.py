"""Record formats of ``__consumer_offsets``, byte-compatible with Kafka's.

Keys and values start with an int16 schema version. Key v0/v1 is an offset commit
(group, topic, partition); key v2 is a group's metadata (group). We write OffsetCommitValue v3 and
GroupMetadataValue v3 and read every non-flexible older version too. A null value is a
tombstone: the offset or group is gone. ``LoadedState`` applies records in log order (the last
record of a key wins), which is how the coordinator is rebuilt at start.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

OFFSETS_TOPIC = "__consumer_offsets"

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
GROUP_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_I64_I32 = struct.Struct(">qi")


class RecordFormatError(ValueError):
    """A key or value in ``__consumer_offsets`` that this broker cannot read."""


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units, 32-bit overflow)."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's ``Utils.abs(groupId.hashCode) % partitions`` (abs is ``& 0x7fffffff``)."""
    return (java_string_hash(group_id) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1  # only from v1 values; we never write it


@dataclass(frozen=True, slots=True)
class MemberRecord:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupRecord:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: tuple[MemberRecord, ...] = ()


# -- encoding ---------------------------------------------------------------------------------
def _string(out: bytearray, text: str | None) -> None:
    if text is None:
        out += _I16.pack(-1)
        return
    raw = text.encode()
    out += _I16.pack(len(raw))
    out += raw


def _bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        out += _I32.pack(-1)
        return
    out += _I32.pack(len(data))
    out += data


def offset_key(group: str, topic: str, partition: int) -> bytes:
    out = bytearray(_I16.pack(OFFSET_KEY_VERSION))
    _string(out, group)
    _string(out, topic)
    out += _I32.pack(partition)
    return bytes(out)


def group_key(group: str) -> bytes:
    out = bytearray(_I16.pack(GROUP_KEY_VERSION))
    _string(out, group)
    return bytes(out)


def offset_value(value: OffsetAndMetadata) -> bytes:
    out = bytearray(_I16.pack(OFFSET_VALUE_VERSION))
    out += _I64_I32.pack(value.offset, value.leader_epoch)
    _string(out, value.metadata)
    out += _I64.pack(value.commit_timestamp)
    return bytes(out)


def group_value(value: GroupRecord) -> bytes:
    out = bytearray(_I16.pack(GROUP_VALUE_VERSION))
    _string(out, value.protocol_type)
    out += _I32.pack(value.generation)
    _string(out, value.protocol)
    _string(out, value.leader)
    out += _I64.pack(value.current_state_timestamp)
    out += _I32.pack(len(value.members))
    for m in value.members:
        _string(out, m.member_id)
        _string(out, m.group_instance_id)
        _string(out, m.client_id)
        _string(out, m.client_host)
        out += _I32.pack(m.rebalance_timeout_ms)
        out += _I32.pack(m.session_timeout_ms)
        _bytes(out, m.subscription)
        _bytes(out, m.assignment)
    return bytes(out)


# -- decoding ---------------------------------------------------------------------------------
class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def i16(self) -> int:
        (value,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def i32(self) -> int:
        (value,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def i64(self) -> int:
        (value,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def string(self) -> str | None:
        length = self.i16()
        if length < 0:
            return None
        end = self.pos + length
        if end > len(self.data):
            raise RecordFormatError("string overruns the record")
        text = self.data[self.pos : end].decode()
        self.pos = end
        return text

    def bytes_(self) -> bytes:
        length = self.i32()
        if length < 0:
            return b""
        end = self.pos + length
        if end > len(self.data):
            raise RecordFormatError("bytes overrun the record")
        raw = bytes(self.data[self.pos : end])
        self.pos = end
        return raw


def decode_key(key: bytes) -> tuple[str, str, int] | str:
    """(group, topic, partition) for an offset key, the group id for a group metadata key."""
    try:
        reader = _Reader(key)
        version = reader.i16()
        if version in (0, 1):
            group, topic = reader.string(), reader.string()
            return group or "", topic or "", reader.i32()
        if version == 2:
            return reader.string() or ""
    except (struct.error, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"malformed key: {exc}") from None
    raise RecordFormatError(f"unknown key version {version}")


def decode_offset_value(value: bytes) -> OffsetAndMetadata:
    try:
        reader = _Reader(value)
        version = reader.i16()
        if version > 3:
            raise RecordFormatError(f"unsupported offset value version {version}")
        offset = reader.i64()
        leader_epoch = reader.i32() if version >= 3 else -1
        metadata = reader.string() or ""
        commit_timestamp = reader.i64()
        expire = reader.i64() if version == 1 else -1
    except (struct.error, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"malformed offset value: {exc}") from None
    return OffsetAndMetadata(offset, leader_epoch, metadata, commit_timestamp, expire)


def decode_group_value(value: bytes) -> GroupRecord:
    try:
        reader = _Reader(value)
        version = reader.i16()
        if version > 3:
            raise RecordFormatError(f"unsupported group metadata version {version}")
        protocol_type = reader.string() or ""
        generation = reader.i32()
        protocol = reader.string()
        leader = reader.string()
        state_ts = reader.i64() if version >= 2 else -1
        members = []
        for _ in range(reader.i32()):
            member_id = reader.string() or ""
            instance_id = reader.string() if version >= 3 else None
            client_id = reader.string() or ""
            client_host = reader.string() or ""
            rebalance_timeout = reader.i32() if version >= 1 else -1
            session_timeout = reader.i32()
            if rebalance_timeout < 0:
                rebalance_timeout = session_timeout
            members.append(
                MemberRecord(
                    member_id,
                    instance_id,
                    client_id,
                    client_host,
                    rebalance_timeout,
                    session_timeout,
                    reader.bytes_(),
                    reader.bytes_(),
                )
            )
    except (struct.error, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"malformed group metadata: {exc}") from None
    return GroupRecord(protocol_type, generation, protocol, leader, state_ts, tuple(members))


@dataclass
class LoadedState:
    """Everything ``__consumer_offsets`` says, after applying its records in order.

    ``add`` keeps only the newest raw value of each key (replay of a long log is mostly
    superseded commits, so nothing is decoded until ``build``); ``build`` decodes the
    survivors into ``offsets`` and ``groups``.
    """

    offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    records: int = 0
    skipped: int = 0
    latest: dict[bytes, bytes | None] = field(default_factory=dict, repr=False)

    def add(self, key: bytes | None, value: bytes | None) -> None:
        self.records += 1
        if key is None:
            self.skipped += 1
        else:
            self.latest[key] = value

    def add_all(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        latest = self.latest
        count = skipped = 0
        for key, value in records:
            count += 1
            if key is None:
                skipped += 1
            else:
                latest[key] = value
        self.records += count
        self.skipped += skipped

    def build(self) -> LoadedState:
        self.offsets, self.groups = {}, {}
        for key, value in self.latest.items():
            if value is None:
                continue  # a tombstone: the offset or group is gone
            try:
                decoded = decode_key(key)
                if isinstance(decoded, tuple):
                    group, topic, partition = decoded
                    stored = decode_offset_value(value)
                    self.offsets.setdefault(group, {})[(topic, partition)] = stored
                else:
                    self.groups[decoded] = decode_group_value(value)
            except RecordFormatError:
                self.skipped += 1  # e.g. records of a newer coordinator: not ours to interpret
        return self

    def apply_all(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> LoadedState:
        self.add_all(records)
        return self.build()
