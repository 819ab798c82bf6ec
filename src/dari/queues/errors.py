"""Domain errors of the AMQP model.

Each error carries the AMQP 0-9-1 reply code and the reply text RabbitMQ would send, so the protocol
layer only has to turn it into ``channel.close`` (soft errors) or ``connection.close`` (hard errors,
``connection_level = True``). The texts follow RabbitMQ's formats exactly because clients and their
test suites match on them.
"""

from __future__ import annotations

from typing import ClassVar


class QueuesError(Exception):
    """Root of the errors a client's request can cause in the queues domain."""

    reply_code: ClassVar[int] = 541
    reply_name: ClassVar[str] = "INTERNAL_ERROR"
    connection_level: ClassVar[bool] = True

    def __init__(self, reply_text: str) -> None:
        super().__init__(reply_text)
        self.reply_text = reply_text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reply_text!r})"


class AccessRefused(QueuesError):
    reply_code = 403
    reply_name = "ACCESS_REFUSED"
    connection_level = False


class NotFound(QueuesError):
    reply_code = 404
    reply_name = "NOT_FOUND"
    connection_level = False


class ResourceLocked(QueuesError):
    reply_code = 405
    reply_name = "RESOURCE_LOCKED"
    connection_level = False


class PreconditionFailed(QueuesError):
    reply_code = 406
    reply_name = "PRECONDITION_FAILED"
    connection_level = False


class UnknownExchangeType(PreconditionFailed):
    """RabbitMQ >= 3.13.3 answers an unknown type with a 406 channel error (older: 503)."""


class CommandInvalid(QueuesError):
    reply_code = 503
    reply_name = "COMMAND_INVALID"


class ResourceError(QueuesError):
    reply_code = 506
    reply_name = "RESOURCE_ERROR"


class NotAllowed(QueuesError):
    reply_code = 530
    reply_name = "NOT_ALLOWED"


class FeatureNotImplemented(QueuesError):
    reply_code = 540
    reply_name = "NOT_IMPLEMENTED"


class InternalError(QueuesError):
    reply_code = 541
    reply_name = "INTERNAL_ERROR"


def resource(kind: str, name: str, vhost: str) -> str:
    """RabbitMQ's ``rabbit_misc:rs/1``: how a resource is named in reply texts."""
    return f"{kind} '{name}' in vhost '{vhost}'"
