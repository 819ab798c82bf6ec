"""The AMQP 0-9-1 domain (RabbitMQ's model): vhosts, exchanges, bindings and routing, queues
on the log engine, consumers and acks, dead-lettering, and the broker model that owns them
(``queues.broker``) with its durable definitions (``queues.definitions``).

Synchronous domain code: nothing here imports ``dari.protocol`` or ``dari.server``, and nothing
runs a task or sleeps: time-driven work (TTL, x-expires) happens when the server calls
``AMQPBroker.tick(now_ms)``. The one asyncio use is ``queue_store``: it batches a loop turn's
appends with ``call_soon``, and its publisher-confirm wait (``wait_durable``) awaits the flush
scheduler's future for a log. The AMQP layer calls this package and maps ``QueuesError``
subclasses to channel or connection closes by their ``reply_code``. This package's namespace
exports the routing model only, so importing it does not pull in the storage engine.
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
