"""Sans-IO Kafka wire codec: frames in, requests out; responses in, bytes out.

``RequestFramer`` splits the stream, ``parse_request`` decodes a frame, handlers build kio
response objects (``response_class``) or use the Produce/Fetch fast paths, and
``encode_response`` / ``encode_fetch_response`` produce the bytes to write.
"""

from dari.protocol.kafka.apis import FUTURE_APIS, SUPPORTED_APIS, ApiKey
from dari.protocol.kafka.codec import (
    RequestHeader,
    api_versions_response,
    build,
    encode_api_versions_fallback,
    encode_response,
    millis,
    parse_request,
    request_class,
    response_class,
    response_module,
)
from dari.protocol.kafka.errors import (
    ErrorCode,
    FrameTooLargeError,
    InvalidRequestError,
    KafkaProtocolError,
    UnknownApiError,
    UnsupportedVersionError,
)
from dari.protocol.kafka.fetch import FetchPartitionResult, encode_fetch_response
from dari.protocol.kafka.framing import RequestFramer
from dari.protocol.kafka.produce import (
    PartitionResult,
    ProducePartition,
    ProduceRequestData,
    ProduceTopic,
    decode_produce,
    encode_produce_response,
)

__all__ = [
    "FUTURE_APIS",
    "SUPPORTED_APIS",
    "ApiKey",
    "ErrorCode",
    "FetchPartitionResult",
    "FrameTooLargeError",
    "InvalidRequestError",
    "KafkaProtocolError",
    "PartitionResult",
    "ProducePartition",
    "ProduceRequestData",
    "ProduceTopic",
    "RequestFramer",
    "RequestHeader",
    "UnknownApiError",
    "UnsupportedVersionError",
    "api_versions_response",
    "build",
    "decode_produce",
    "encode_api_versions_fallback",
    "encode_fetch_response",
    "encode_produce_response",
    "encode_response",
    "millis",
    "parse_request",
    "request_class",
    "response_class",
    "response_module",
]
