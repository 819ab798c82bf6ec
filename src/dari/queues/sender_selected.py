"""Sender-selected distribution, as RabbitMQ does it: the ``CC`` and ``BCC`` headers of a
published message are arrays of extra routing keys, routed like the message's own key through
the same exchange; ``BCC`` is removed before the message is stored, so no consumer sees it.

Array elements that are not strings are ignored; a ``CC`` or ``BCC`` that is not an array
closes the channel with RabbitMQ's 406 "invalid message: {unacceptable_type_in_header,...}".

``route`` is the whole of a publish's routing (the exchange's own, then the CC/BCC keys); pure
functions over the vhost's routing model and ``Message``, no wire codec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dari.message import Message, header_marker
from dari.queues.errors import PreconditionFailed
from dari.queues.exchanges.base import Headers
from dari.queues.values import FIELD_TYPES

if TYPE_CHECKING:
    from dari.queues.vhost import QueueHandle, VirtualHost

ROUTING_HEADERS = ("CC", "BCC")
_CC, _BCC = (header_marker(name) for name in ROUTING_HEADERS)


def route(
    vhost: VirtualHost, exchange: str, routing_key: str, headers: Headers, properties: bytes
) -> tuple[list[QueueHandle], bytes]:
    """(the queues a message published to ``exchange`` reaches, each once; the property bytes
    to store it with — ``properties`` itself unless a BCC header had to be removed).

    ``headers`` is what the headers exchange routes on, None when the message has no headers
    table (then it has no CC/BCC either); ``properties`` are its raw AMQP property bytes.
    Raises what ``vhost.route`` raises, and ``PreconditionFailed`` for a CC/BCC that is not an
    array. The common message costs one ``vhost.route`` and, with headers, two substring tests.
    """
    queues = vhost.route(exchange, routing_key, headers)
    if headers is None or not (_CC in properties or _BCC in properties):
        return queues, properties
    keys, stored = sender_selected(Message(exchange, routing_key, b"", properties))
    for key in keys:
        queues += [q for q in vhost.route(exchange, key, headers) if q not in queues]
    return queues, properties if stored is None else stored.properties


def sender_selected(message: Message) -> tuple[list[str], Message | None]:
    """(extra routing keys from CC then BCC, ``message`` without its BCC header — or None when
    there was no BCC and the message stays as it is)."""
    typed = message.typed_headers()
    keys: list[str] = []
    for name in ROUTING_HEADERS:
        field = typed.get(name)
        if field is None:
            continue
        if field.tag != "A":
            type_name = FIELD_TYPES.get(field.tag, field.tag)
            raise PreconditionFailed(
                f'invalid message: {{unacceptable_type_in_header,"{name}",{type_name}}}'
            )
        keys += [_text(item.value) for item in field.value if item.tag == "S"]
    if "BCC" not in typed:
        return keys, None
    del typed["BCC"]
    return keys, message.replace_properties(headers=typed)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
