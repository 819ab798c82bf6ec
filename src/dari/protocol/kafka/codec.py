"""Kafka request parsing and response encoding on top of the kio schemas.

Request and response bodies are kio's frozen dataclasses (generated from Kafka's JSON message
definitions), except Produce requests, which take the zero-copy path in ``produce``. kio
writes tagged fields only when they differ from their default, which old librdkafka needs.

kio represents a few wire types with richer Python types: ``timedelta_i32/i64`` fields are
``datetime.timedelta``, ``datetime_i64`` fields are aware ``datetime`` (None for -1), error
codes are ``ErrorCode`` members, topic ids are ``uuid.UUID``. ``millis`` reads them back as
integers and ``build`` constructs any entity from plain ints, lists and error numbers.
"""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import fields
from functools import cache
from types import ModuleType
from typing import Any, TypeVar

from kio.index import load_payload_module, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.serial.readers import tz_aware_from_i64
from kio.static.constants import EntityType

from dari.protocol.kafka import wire
from dari.protocol.kafka.apis import SUPPORTED_APIS, ApiKey, decodable_range
from dari.protocol.kafka.errors import (
    InvalidRequestError,
    KafkaProtocolError,
    UnknownApiError,
    UnsupportedVersionError,
)
from dari.protocol.kafka.guard import check_bounds
from dari.protocol.kafka.header import RequestHeader
from dari.protocol.kafka.produce import decode_produce

__all__ = [
    "RequestHeader",
    "api_versions_response",
    "build",
    "encode_api_versions_fallback",
    "encode_response",
    "millis",
    "parse_request",
    "request_class",
    "response_class",
    "response_module",
]

E = TypeVar("E")
_HEAD = struct.Struct(">hhi")
_FRAME_HEAD = struct.Struct(">ii")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Anything kio's reader may raise on hostile bytes; all of it is the peer's fault. kio raises
# KeyError for a tagged field its schema does not know (Kafka would skip it).
_DECODE_ERRORS = (
    SerialError,
    ValueError,
    TypeError,
    OverflowError,
    IndexError,
    KeyError,
    struct.error,
)


@cache
def request_class(api_key: int, api_version: int) -> type:
    """The kio request class of an API version (kio raises KioIndexError for unknown ones)."""
    return load_request_schema(api_key, api_version)


@cache
def response_class(api_key: int, api_version: int) -> type:
    """The kio response class handlers instantiate, e.g. ``response_class(3, 12)(...)``."""
    return load_response_schema(api_key, api_version)


@cache
def response_module(api_key: int, api_version: int) -> ModuleType:
    """The kio module holding the response class and its nested entity classes."""
    return load_payload_module(api_key, api_version, EntityType.response)


@cache
def _reader(cls: type) -> Any:
    return entity_reader(cls)


@cache
def _writer(cls: type) -> Any:
    return entity_writer(cls)


def parse_request(
    frame: memoryview | bytes, apis: dict[int, tuple[int, int]] = SUPPORTED_APIS
) -> tuple[RequestHeader, object]:
    """Decode one request frame (the bytes after the size prefix) into header and body.

    The body is a kio request dataclass, or ``produce.ProduceRequestData`` for Produce.
    Raises UnknownApiError / UnsupportedVersionError carrying the header (answerable), and
    InvalidRequestError for malformed bytes (header set when it could be read).
    """
    view = frame if isinstance(frame, memoryview) else memoryview(frame)
    try:
        api_key, api_version, correlation_id = _HEAD.unpack_from(view, 0)
        client_id, pos = wire.read_string(view, 8)
    except (struct.error, ValueError) as exc:
        raise InvalidRequestError(f"malformed request header: {exc}") from exc
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    bounds = decodable_range(api_key, apis)
    if bounds is None:
        raise UnknownApiError(api_key, header)
    if not bounds[0] <= api_version <= bounds[1]:
        raise UnsupportedVersionError(api_key, api_version, header)
    cls = request_class(api_key, api_version)
    try:
        if cls.__flexible__:
            pos = wire.skip_tagged_fields(view, pos)
        if api_key == ApiKey.PRODUCE:
            body: object = decode_produce(api_version, view[pos:])
        else:
            check_bounds(cls, view, pos)
            body, _size = _reader(cls)(view, pos)
    except KafkaProtocolError as exc:
        exc.header = header
        raise
    except _DECODE_ERRORS as exc:
        raise InvalidRequestError(
            f"malformed request body for API {api_key} v{api_version}: {exc}", header
        ) from exc
    return header, body


def _uses_header_v1(api_key: int, api_version: int) -> bool:
    # ApiVersions responses always use header v0, so clients can read them before they
    # know which versions the broker speaks.
    return api_key != ApiKey.API_VERSIONS and response_class(api_key, api_version).__flexible__


def encode_response(header: RequestHeader, response: object) -> bytes:
    """A whole response frame: int32 size, response header, body.

    ``response`` is a kio response instance for ``header``'s API version, or an already
    encoded body (bytes, e.g. from ``produce.encode_produce_response``).
    """
    buf = io.BytesIO()
    buf.write(_FRAME_HEAD.pack(0, header.correlation_id))
    if _uses_header_v1(header.api_key, header.api_version):
        buf.write(b"\x00")
    if isinstance(response, bytes | bytearray | memoryview):
        buf.write(response)
    else:
        cls = type(response)
        if (
            getattr(cls, "__api_key__", None) != header.api_key
            or getattr(cls, "__version__", None) != header.api_version
            or getattr(cls, "__type__", None) is not EntityType.response
        ):
            raise TypeError(
                f"{cls.__name__} is not the response to API {header.api_key} v{header.api_version}"
            )
        _writer(cls)(buf, response)
    out = buf.getbuffer()
    wire.INT32.pack_into(out, 0, len(out) - 4)
    del out
    return buf.getvalue()


def api_versions_response(
    version: int,
    error_code: ErrorCode = ErrorCode.none,
    apis: dict[int, tuple[int, int]] = SUPPORTED_APIS,
) -> object:
    """The kio ApiVersionsResponse listing ``apis``."""
    module = response_module(ApiKey.API_VERSIONS, version)
    api_keys = tuple(
        module.ApiVersion(api_key=int(key), min_version=low, max_version=high)
        for key, (low, high) in sorted(apis.items())
    )
    extra: dict[str, Any] = {}
    if version >= 1:
        extra["throttle_time"] = datetime.timedelta(0)
    return module.ApiVersionsResponse(error_code=error_code, api_keys=api_keys, **extra)


def encode_api_versions_fallback(header: RequestHeader) -> bytes:
    """Kafka's answer to an ApiVersions request of a version it does not know: a v0 response
    with UNSUPPORTED_VERSION and the supported list, so the client can retry lower."""
    body = api_versions_response(0, ErrorCode.unsupported_version)
    v0 = RequestHeader(header.api_key, 0, header.correlation_id, header.client_id)
    return encode_response(v0, body)


def millis(value: datetime.timedelta | datetime.datetime | None) -> int:
    """A kio duration or timestamp as Kafka's integer milliseconds (None -> -1)."""
    if value is None:
        return -1
    if isinstance(value, datetime.datetime):
        value = value - _EPOCH
    return (value.days * 86_400_000) + (value.seconds * 1000) + (value.microseconds // 1000)


def build(entity_type: type[E], **values: Any) -> E:
    """Construct a kio entity from plain values: ints for durations, timestamps (-1 = None)
    and error codes, lists for arrays. Values of the proper kio types pass unchanged."""
    for f in fields(entity_type):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        value = values[f.name]
        kind = f.metadata.get("kafka_type")
        if isinstance(value, int) and not isinstance(value, bool):
            if kind in ("timedelta_i32", "timedelta_i64"):
                values[f.name] = datetime.timedelta(milliseconds=value)
            elif kind == "datetime_i64":
                values[f.name] = None if value == -1 else tz_aware_from_i64(value)
            elif kind == "error_code":
                values[f.name] = ErrorCode(value)
        elif isinstance(value, list):
            values[f.name] = tuple(value)
    return entity_type(**values)
