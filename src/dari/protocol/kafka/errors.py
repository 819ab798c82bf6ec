"""Errors raised while decoding what a Kafka client sent.

Every exception here means *the peer* sent something we cannot accept; a bug of ours surfaces
as any other exception. Each carries the Kafka error code the broker would answer with and,
when the request header could be read, the header itself, so the server can still reply.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from dari.protocol.kafka.header import RequestHeader

__all__ = [
    "ErrorCode",
    "FrameTooLargeError",
    "InvalidRequestError",
    "KafkaProtocolError",
    "UnknownApiError",
    "UnsupportedVersionError",
]


class KafkaProtocolError(Exception):
    """Root of all peer protocol errors; ``header`` is set when the request header parsed."""

    error_code: ErrorCode = ErrorCode.invalid_request

    def __init__(self, message: str, header: RequestHeader | None = None) -> None:
        super().__init__(message)
        self.header = header


class FrameTooLargeError(KafkaProtocolError):
    """The int32 size prefix is outside what we accept (over socket.request.max.bytes,
    negative, or too small to hold a request header); the connection must be closed."""


class InvalidRequestError(KafkaProtocolError):
    """A malformed request header or body (Kafka closes the connection on these)."""


class UnsupportedVersionError(KafkaProtocolError):
    """A known API at a version we do not decode; answerable with UNSUPPORTED_VERSION."""

    error_code = ErrorCode.unsupported_version

    def __init__(self, api_key: int, api_version: int, header: RequestHeader | None = None):
        super().__init__(f"API {api_key} version {api_version} is not supported", header)
        self.api_key = api_key
        self.api_version = api_version


class UnknownApiError(KafkaProtocolError):
    """An API key this broker does not implement at all."""

    error_code = ErrorCode.unsupported_version

    def __init__(self, api_key: int, header: RequestHeader | None = None) -> None:
        super().__init__(f"API key {api_key} is not supported", header)
        self.api_key = api_key
