"""The basic class's content properties: the one codec for AMQP message property bytes.

On the wire a content header is ``class id, weight, body size`` (12 bytes) then the *property
bytes*: a flags word (bit 15 = the first property; bit 0 = another flags word follows, which the
basic class never needs) and the present properties in flag order. The broker keeps those bytes
as the publisher sent them and forwards them byte-for-byte; it reads them in three ways, each
for its own need:

* ``parse_properties`` -> (delivery_mode, priority, expiration): the fields a queue acts on, on
  every publish and every message read back from a log; cached by the bytes, since messages
  mostly repeat a few property blocks.
* ``ContentHeader``: a received header frame payload, validated once (its layout cached by the
  property bytes too), each field decoded on first access.
* ``decode_properties`` -> ``Properties``: every field, for rewriting the properties
  (dead-lettering adds ``x-death``, BCC is removed) with the one writer, ``encode_properties``.

Every reader shares one walk of the property list (``property_layout``), which raises
``ValueError`` on malformed bytes; ``ContentHeader`` turns that into a 501 ``FrameError``.
The caches are plain dicts touched only from the event loop thread.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any

from dari.protocol.amqp.errors import FrameError
from dari.protocol.amqp.table import Field, Table, decode_table, decode_table_typed, encode_table

__all__ = [
    "BASIC_CLASS",
    "EMPTY_PROPERTIES",
    "PROPERTY_FIELDS",
    "ContentHeader",
    "Properties",
    "decode_properties",
    "encode_content_header",
    "encode_properties",
    "headers_table",
    "parse_properties",
    "property_layout",
    "typed_headers",
]

BASIC_CLASS = 60
EMPTY_PROPERTIES = b"\x00\x00"  # a flags word with no property present

# (name, flag bit, kind) in wire order; kinds: s = shortstr, o = octet, q = u64, t = table
PROPERTY_FIELDS = (
    ("content_type", 1 << 15, "s"),
    ("content_encoding", 1 << 14, "s"),
    ("headers", 1 << 13, "t"),
    ("delivery_mode", 1 << 12, "o"),
    ("priority", 1 << 11, "o"),
    ("correlation_id", 1 << 10, "s"),
    ("reply_to", 1 << 9, "s"),
    ("expiration", 1 << 8, "s"),
    ("message_id", 1 << 7, "s"),
    ("timestamp", 1 << 6, "q"),
    ("type", 1 << 5, "s"),
    ("user_id", 1 << 4, "s"),
    ("app_id", 1 << 3, "s"),
    ("cluster_id", 1 << 2, "s"),
)
_KNOWN_FLAGS = sum(bit for _name, bit, _kind in PROPERTY_FIELDS)
_KIND = {name: kind for name, _bit, kind in PROPERTY_FIELDS}

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD12 = struct.Struct(">HHQ")  # class id, weight, body size

Spans = dict[str, tuple[int, int]]  # present property -> (start, end) of its value
Layout = tuple[int, Spans | None]  # (flags without the continuation bit, spans or None)


@dataclass(frozen=True, slots=True)
class Properties:
    """All basic properties, for building new property bytes (e.g. when dead-lettering adds
    ``x-death``); ``headers`` may be a decoded ``Table`` (written back verbatim) or any
    mapping of plain or ``Field`` values (encoded with ``encode_table``). Immutable."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Any = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


_NO_PROPERTIES = Properties()

# -- reading --------------------------------------------------------------------------------

_CACHE_MAX = 4096
_LAYOUTS: dict[bytes, Layout] = {}
_PARSED: dict[bytes, tuple[int, int | None, str | None]] = {}
_PLANS: dict[int, tuple[tuple[str, str], ...]] = {}  # flags -> present (name, kind)


def property_layout(raw: bytes) -> Layout:
    """(flags, spans) of property bytes, validated: where each present property's value lies.

    Raises ValueError when the bytes are not a well-formed basic property list. Cached by the
    bytes (``raw`` must be ``bytes``); a full cache starts over.
    """
    layout = _LAYOUTS.get(raw)
    if layout is None:
        layout = _walk(raw)
        if len(_LAYOUTS) >= _CACHE_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[raw] = layout
    return layout


def _walk(raw: bytes) -> Layout:
    if len(raw) < 2:
        raise ValueError("property bytes shorter than the flags word")
    (flags,) = _U16.unpack_from(raw, 0)
    pos = 2
    word = flags
    while word & 1:
        # A continuation word: basic has only 14 properties, so it must carry no flags.
        if pos + 2 > len(raw):
            raise ValueError("truncated property flags")
        (word,) = _U16.unpack_from(raw, pos)
        pos += 2
        if word & 0xFFFE:
            raise ValueError("property flags beyond the basic class")
    flags &= 0xFFFE
    if flags & ~_KNOWN_FLAGS:
        raise ValueError("unknown property flags")
    if not flags:
        if pos != len(raw):
            raise ValueError("trailing bytes after the property flags")
        return 0, None
    plan = _PLANS.get(flags)
    if plan is None:
        plan = _PLANS[flags] = tuple(
            (name, kind) for name, bit, kind in PROPERTY_FIELDS if flags & bit
        )
    spans: Spans = {}
    try:
        for name, kind in plan:
            if kind == "s":
                start = pos + 1
                end = start + raw[pos]
            elif kind == "o":
                start, end = pos, pos + 1
            elif kind == "q":
                start, end = pos, pos + 8
            else:
                start, end = pos, pos + 4 + _U32.unpack_from(raw, pos)[0]
            spans[name] = (start, end)
            pos = end
    except (IndexError, struct.error):
        raise ValueError("truncated property list") from None
    if pos > len(raw):
        raise ValueError("truncated property list")
    if pos < len(raw):
        raise ValueError("trailing bytes after the property list")
    return flags, spans


def parse_properties(raw: bytes | bytearray | memoryview) -> tuple[int, int | None, str | None]:
    """(delivery_mode, priority, expiration) from property bytes: what a queue acts on.

    delivery_mode is 0 when absent. Raises ValueError when the bytes are not a well-formed
    property list. Cached by the bytes: one dict lookup for a property block seen before.
    """
    key = raw if type(raw) is bytes else bytes(raw)
    parsed = _PARSED.get(key)
    if parsed is None:
        spans = property_layout(key)[1]
        if spans is None:
            parsed = (0, None, None)
        else:
            parsed = (
                _value(key, "delivery_mode", spans) or 0,
                _value(key, "priority", spans),
                _value(key, "expiration", spans),
            )
        if len(_PARSED) >= _CACHE_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _value(raw: bytes, name: str, spans: Spans | None) -> Any:
    """One property's value (not ``headers``), or None when absent."""
    if spans is None:
        return None
    span = spans.get(name)
    if span is None:
        return None
    start, end = span
    kind = _KIND[name]
    if kind == "o":
        return raw[start]
    if kind == "q":
        return _U64.unpack_from(raw, start)[0]
    return raw[start:end].decode("utf-8", "surrogateescape")


def headers_table(raw: bytes) -> Table | None:
    """The headers table of property bytes as plain values (``.typed()`` for wire types), or
    None without one; raises ValueError on malformed property bytes and ``AMQPError`` (502)
    on a malformed table."""
    spans = property_layout(raw)[1]
    span = spans.get("headers") if spans else None
    return decode_table(raw, span[0])[0] if span else None


def typed_headers(raw: bytes) -> dict[str, Field]:
    """The headers table of property bytes with wire types (empty without one)."""
    spans = property_layout(raw)[1]
    span = spans.get("headers") if spans else None
    return decode_table_typed(raw, span[0])[0] if span else {}


def decode_properties(raw: bytes) -> Properties:
    """Every property of property bytes decoded (``headers`` as a ``Table``)."""
    spans = property_layout(raw)[1]
    if spans is None:
        return _NO_PROPERTIES
    values = {name: _value(raw, name, spans) for name in spans if name != "headers"}
    return Properties(headers=headers_table(raw), **values)


class ContentHeader:
    """A received content header: the raw frame payload plus lazily parsed fields.

    ``raw`` (bytes) is what gets forwarded to consumers and ``raw_properties`` its property
    bytes. ``class_id``, ``body_size`` and ``flags`` are read on construction, which also
    validates the property list (a malformed header raises ``FrameError``) through the cached
    ``property_layout``; values are decoded on first access. ``headers`` decodes the table on
    first access and may raise ``AMQPError`` (502) if its contents are malformed. Built by the
    connection that received it; immutable afterwards, so safe to share.
    """

    __slots__ = (
        "_headers", "_spans", "body_size", "class_id", "flags", "raw", "raw_properties", "weight",
    )

    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self.raw = raw if type(raw) is bytes else bytes(raw)
        self.raw_properties = properties = self.raw[12:]
        self._headers: Any = _UNSET
        # Publishers mostly repeat one property block: reuse its validated layout.
        layout = _LAYOUTS.get(properties)
        if layout is None:
            if len(self.raw) < 12:
                raise FrameError("truncated content header")
            try:
                layout = property_layout(properties)
            except ValueError as exc:
                raise FrameError(f"content header: {exc}") from None
        self.class_id, self.weight, self.body_size = _HEAD12.unpack_from(self.raw, 0)
        self.flags, self._spans = layout

    def _get(self, name: str) -> Any:
        # ``_value`` inlined: the header getters are read per published message.
        spans = self._spans
        if spans is None or name not in spans:
            return None
        start, end = spans[name]
        kind = _KIND[name]
        if kind == "o":
            return self.raw_properties[start]
        if kind == "q":
            return _U64.unpack_from(self.raw_properties, start)[0]
        return self.raw_properties[start:end].decode("utf-8", "surrogateescape")

    @property
    def delivery_mode(self) -> int | None:
        return self._get("delivery_mode")

    @property
    def persistent(self) -> bool:
        return self._get("delivery_mode") == 2

    @property
    def priority(self) -> int | None:
        return self._get("priority")

    @property
    def expiration(self) -> str | None:
        return self._get("expiration")

    @property
    def reply_to(self) -> str | None:
        return self._get("reply_to")

    @property
    def correlation_id(self) -> str | None:
        return self._get("correlation_id")

    @property
    def message_id(self) -> str | None:
        return self._get("message_id")

    @property
    def user_id(self) -> str | None:
        return self._get("user_id")

    @property
    def timestamp(self) -> int | None:
        return self._get("timestamp")

    @property
    def content_type(self) -> str | None:
        return self._get("content_type")

    @property
    def headers(self) -> Table | None:
        """The headers table (plain values; ``.typed()`` for wire types), or None."""
        if self._headers is _UNSET:
            span = self._spans.get("headers") if self._spans else None
            self._headers = decode_table(self.raw_properties, span[0])[0] if span else None
        return self._headers

    def properties(self) -> Properties:
        """Every property decoded (headers included)."""
        spans = self._spans
        if spans is None:
            return _NO_PROPERTIES
        raw = self.raw_properties
        values = {name: _value(raw, name, spans) for name in spans if name != "headers"}
        return Properties(headers=self.headers, **values)

    def __repr__(self) -> str:
        return (
            f"ContentHeader(class_id={self.class_id}, body_size={self.body_size}, raw={self.raw!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContentHeader) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


_UNSET = object()

# -- writing --------------------------------------------------------------------------------


def _shortstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if len(data) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value!r}")
    return _U8.pack(len(data)) + data


def encode_properties(props: Properties | None = None, /, **fields: Any) -> bytes:
    """Property bytes for ``props`` (default: none set) with ``fields`` replaced, as they
    follow class/weight/body-size in a header frame: ``encode_properties(delivery_mode=2)``,
    ``encode_properties(decode_properties(raw), headers=h, expiration=None)``."""
    if fields:
        props = dataclasses.replace(props or _NO_PROPERTIES, **fields)
    elif props is None:
        return EMPTY_PROPERTIES
    flags = 0
    parts = [b""]
    for name, bit, kind in PROPERTY_FIELDS:
        value = getattr(props, name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_shortstr(value))
        elif kind == "o":
            parts.append(_U8.pack(value))
        elif kind == "q":
            parts.append(_U64.pack(value))
        else:
            parts.append(encode_table(value))
    parts[0] = _U16.pack(flags)
    return b"".join(parts)


def encode_content_header(body_size: int, props: Properties, class_id: int = BASIC_CLASS) -> bytes:
    """A content header frame *payload* (wrap it with ``ContentHeader`` to forward it)."""
    return _HEAD12.pack(class_id, 0, body_size) + encode_properties(props)
