"""Pre-flight walk of a request body that bounds every length and count by the bytes present.

kio's native reader sizes its allocations from the lengths and counts it reads, and a failed
allocation aborts the whole process; one frame claiming a 2**32-element array would kill the
broker. This walk follows the same schema (kio's dataclass metadata), checks each array count
and string/bytes length against the bytes that remain, and raises ValueError otherwise. It
allocates nothing proportional to the claimed sizes.

The plan is read from what kio's generated schemas declare publicly: dataclass fields typed
``T``, ``T | None``, ``tuple[T, ...]`` or ``tuple[T, ...] | None`` (an entity when ``T`` is a
dataclass) with ``kafka_type`` and ``tag`` in their metadata.
"""

from __future__ import annotations

import struct
from dataclasses import Field, fields, is_dataclass
from functools import cache
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from dari.protocol.kafka.wire import INT16, INT32, read_uvarint

__all__ = ["check_bounds", "prepare"]

_FIXED = {
    "int8": 1, "uint8": 1, "bool": 1,
    "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8,
    "uuid": 16,
}  # fmt: skip
_INT8 = struct.Struct(">b")

# Plan steps: (kind, array, nullable_entity, payload, min_item_size)
_PRIMITIVE, _STRING, _BYTES, _ENTITY = range(4)


def check_bounds(entity_type: type, view: memoryview, pos: int) -> None:
    """Raise ValueError if ``view[pos:]`` claims more elements or bytes than it holds."""
    _walk(entity_type, view, pos, len(view))


def prepare(entity_type: type) -> None:
    """Build the walk plan now, so a schema surprise fails loudly in tests (which call this
    for every API) instead of looking like a malformed request."""
    steps, tags, _flexible = _plan(entity_type)
    for step in (*steps, *tags.values()):
        if step[0] == _ENTITY:
            prepare(step[3])


@cache
def _plan(entity_type: type) -> tuple[tuple, dict[int, tuple], bool]:
    flexible = entity_type.__flexible__
    steps = []
    tags: dict[int, tuple] = {}
    for f in fields(entity_type):
        tag = f.metadata.get("tag")
        step = _step(f, flexible, tagged=tag is not None)
        if tag is None:
            steps.append(step)
        else:
            tags[int(tag)] = step
    return tuple(steps), tags, flexible


def _shape(f: Field[Any]) -> tuple[Any, bool, bool]:
    """(item type, is an array, may be null) of a schema field, from its annotation."""
    kind = f.type
    nullable = False
    if get_origin(kind) in (UnionType, Union):
        members = [arg for arg in get_args(kind) if arg is not NoneType]
        if len(members) != 1:
            raise TypeError(f"field {f.name} has an unsupported union type {kind}")
        nullable = True
        kind = members[0]
    array = get_origin(kind) is tuple
    if array:
        kind = get_args(kind)[0]
    return kind, array, nullable


def _step(f: Field[Any], flexible: bool, tagged: bool) -> tuple:
    kind, array, nullable = _shape(f)
    if is_dataclass(kind):
        nullable = nullable and not tagged and not array
        return (_ENTITY, array, nullable, kind, _min_size(kind))
    kafka_type = f.metadata["kafka_type"]
    if kafka_type == "string":
        return (_STRING, array, False, flexible, 1 if flexible else 2)
    if kafka_type in ("bytes", "records"):
        return (_BYTES, array, False, flexible, 1 if flexible else 4)
    width = _FIXED[kafka_type]
    return (_PRIMITIVE, array, False, width, width)


@cache
def _min_size(entity_type: type) -> int:
    steps, _tags, flexible = _plan(entity_type)
    total = 1 if flexible else 0  # the tagged-field count
    for _kind, array, nullable, _payload, item in steps:
        if array:
            total += 1 if flexible else 4
        elif nullable:
            total += 1
        else:
            total += item
    return max(total, 1)


def _walk(entity_type: type, view: memoryview, pos: int, end: int) -> int:
    steps, tags, flexible = _plan(entity_type)
    for step in steps:
        pos = _value(step, view, pos, end, flexible)
    if flexible:
        count, pos = read_uvarint(view, pos)
        for _ in range(count):
            tag, pos = read_uvarint(view, pos)
            size, pos = read_uvarint(view, pos)
            stop = pos + size
            if stop > end:
                raise ValueError("tagged field runs past the end of the request")
            step = tags.get(tag)
            if step is not None:
                _value(step, view, pos, stop, flexible)
            pos = stop
    return pos


def _value(step: tuple, view: memoryview, pos: int, end: int, flexible: bool) -> int:
    kind, array, nullable, payload, item = step
    if array:
        if flexible:
            count, pos = read_uvarint(view, pos)
            count -= 1
        else:
            (count,) = INT32.unpack_from(view, pos)
            pos += 4
        if count < 0:
            return pos
        if count * item > end - pos:
            raise ValueError(f"array of {count} elements does not fit in the request")
        for _ in range(count):
            pos = _one(kind, False, payload, view, pos, end)
        return pos
    return _one(kind, nullable, payload, view, pos, end)


def _one(kind: int, nullable: bool, payload, view: memoryview, pos: int, end: int) -> int:
    if kind == _PRIMITIVE:
        pos += payload
    elif kind == _ENTITY:
        if nullable:
            (marker,) = _INT8.unpack_from(view, pos)
            pos += 1
            if marker < 0:
                return pos
        pos = _walk(payload, view, pos, end)
    else:
        if payload:  # flexible: compact length + 1
            length, pos = read_uvarint(view, pos)
            length -= 1
        elif kind == _STRING:
            (length,) = INT16.unpack_from(view, pos)
            pos += 2
        else:
            (length,) = INT32.unpack_from(view, pos)
            pos += 4
        if length > 0:
            pos += length
    if pos > end:
        raise ValueError("field runs past the end of the request")
    return pos
