"""The AMQP 0-9-1 domain (RabbitMQ's model): vhosts, exchanges, bindings and routing.

Pure, synchronous domain code: no asyncio and no protocol imports. The AMQP layer calls it and
maps ``QueuesError`` subclasses to channel or connection closes by their ``reply_code``.
"""

from dari.queues.bindings import Binding, Deletions, Destination, DestinationKind
from dari.queues.errors import (
    AccessRefused,
    CommandInvalid,
    FeatureNotImplemented,
    InternalError,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    QueuesError,
    ResourceError,
    ResourceLocked,
    UnknownExchangeType,
)
from dari.queues.exchanges import (
    ExchangeType,
    exchange_type,
    exchange_type_names,
    register_exchange_type,
)
from dari.queues.vhost import (
    DEFAULT_EXCHANGE,
    PREDECLARED_EXCHANGES,
    Exchange,
    QueueHandle,
    QueueRef,
    VirtualHost,
)

__all__ = [
    "DEFAULT_EXCHANGE",
    "PREDECLARED_EXCHANGES",
    "AccessRefused",
    "Binding",
    "CommandInvalid",
    "Deletions",
    "Destination",
    "DestinationKind",
    "Exchange",
    "ExchangeType",
    "FeatureNotImplemented",
    "InternalError",
    "NotAllowed",
    "NotFound",
    "PreconditionFailed",
    "QueueHandle",
    "QueueRef",
    "QueuesError",
    "ResourceError",
    "ResourceLocked",
    "UnknownExchangeType",
    "VirtualHost",
    "exchange_type",
    "exchange_type_names",
    "register_exchange_type",
]
