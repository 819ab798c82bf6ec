"""Errors raised while decoding or sequencing what an AMQP 0-9-1 client sent.

Every ``AMQPError`` means *the peer* broke the protocol (or asked for something the broker
refuses) and carries what the broker answers with: the reply code and text for a
``connection.close`` or ``channel.close``, the class/method id that caused it, and whether the
whole connection or only one channel must close. A bug of ours surfaces as any other
exception; misuse of the sans-IO API by the server adapter raises ``LocalProtocolError``.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CONNECTION_LEVEL_CODES",
    "AMQPError",
    "FrameError",
    "LocalProtocolError",
    "ReplyCode",
]


class ReplyCode(IntEnum):
    """Reply codes of AMQP 0-9-1 as RabbitMQ uses them (spec section 1.2, ``constants``)."""

    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541


# The spec classes these as "hard errors": they close the connection, the others a channel.
CONNECTION_LEVEL_CODES = frozenset(
    {
        ReplyCode.CONNECTION_FORCED,
        ReplyCode.INVALID_PATH,
        ReplyCode.FRAME_ERROR,
        ReplyCode.SYNTAX_ERROR,
        ReplyCode.COMMAND_INVALID,
        ReplyCode.CHANNEL_ERROR,
        ReplyCode.UNEXPECTED_FRAME,
        ReplyCode.RESOURCE_ERROR,
        ReplyCode.NOT_ALLOWED,
        ReplyCode.NOT_IMPLEMENTED,
        ReplyCode.INTERNAL_ERROR,
    }
)

_MAX_SHORTSTR = 255


class AMQPError(Exception):
    """Root of every peer protocol error; the fields are what ``*.close`` carries.

    ``reply_text`` is formatted the RabbitMQ way (``"NOT_FOUND - no queue 'q'"``) so clients show
    familiar messages. ``connection_level`` defaults from the spec's hard/soft classification of
    the code and can be forced (RabbitMQ closes the connection with 403 on a failed login).
    ``channel`` is the channel the offending frame came on (0 for connection-level frames);
    a connection-level error is always answered on channel 0.
    """

    def __init__(
        self,
        reply_code: int,
        text: str,
        *,
        class_id: int = 0,
        method_id: int = 0,
        channel: int = 0,
        connection_level: bool | None = None,
    ) -> None:
        code = ReplyCode(reply_code)
        reply_text = f"{code.name} - {text}" if text else code.name
        encoded = reply_text.encode("utf-8", "surrogateescape")
        if len(encoded) > _MAX_SHORTSTR:
            reply_text = encoded[:_MAX_SHORTSTR].decode("utf-8", "ignore")
        super().__init__(reply_text)
        self.reply_code = int(code)
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        self.channel = channel
        self.connection_level = (
            code in CONNECTION_LEVEL_CODES if connection_level is None else connection_level
        )

    def __repr__(self) -> str:
        scope = "connection" if self.connection_level else f"channel {self.channel}"
        return (
            f"{type(self).__name__}({self.reply_code}, {self.reply_text!r}, {scope}, "
            f"method={self.class_id}.{self.method_id})"
        )


class FrameError(AMQPError):
    """The byte stream itself is broken (bad frame-end octet, oversized or unknown frame,
    truncated method fields): 501 FRAME_ERROR, after which the stream cannot be trusted."""

    def __init__(self, text: str, *, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(ReplyCode.FRAME_ERROR, text, class_id=class_id, method_id=method_id)


class LocalProtocolError(Exception):
    """The server adapter asked for something the protocol state forbids (our bug, not the
    peer's): e.g. sending a delivery on a channel that is not open."""
