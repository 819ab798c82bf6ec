"""Exchange types behind one interface; importing this package registers the built-in ones."""

from dari.queues.exchanges.base import (
    ExchangeType,
    exchange_type,
    exchange_type_names,
    register_exchange_type,
    unregister_exchange_type,
)
from dari.queues.exchanges.direct import DirectExchange
from dari.queues.exchanges.fanout import FanoutExchange
from dari.queues.exchanges.headers import HeadersExchange
from dari.queues.exchanges.topic import TopicExchange

__all__ = [
    "DirectExchange",
    "ExchangeType",
    "FanoutExchange",
    "HeadersExchange",
    "TopicExchange",
    "exchange_type",
    "exchange_type_names",
    "register_exchange_type",
    "unregister_exchange_type",
]
