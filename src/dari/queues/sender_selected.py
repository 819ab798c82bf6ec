"""Sender-selected distribution, as RabbitMQ does it: the ``CC`` and ``BCC`` headers of a
published message are arrays of extra routing keys, routed like the message's own key through
the same exchange; ``BCC`` is removed before the message is stored, so no consumer sees it.

Array elements that are not strings are ignored; a ``CC`` or ``BCC`` that is not an array
closes the channel with RabbitMQ's 406 "invalid message: {unacceptable_type_in_header,...}".
"""

from __future__ import annotations

import dataclasses

from dari.protocol.amqp.fastpath import ContentHeader, encode_properties
from dari.queues.errors import PreconditionFailed
from dari.queues.values import FIELD_TYPES

ROUTING_HEADERS = ("CC", "BCC")


def may_route_by_headers(properties: bytes) -> bool:
    """A cheap test on raw property bytes: could the headers hold CC or BCC? (A table key is
    a length octet and the name, so a miss is certain; a hit costs one decode.)"""
    return b"\x02CC" in properties or b"\x03BCC" in properties


def routing_headers(header: ContentHeader) -> tuple[list[str], bytes | None]:
    """(extra routing keys from CC then BCC, property bytes without BCC — or None when there
    was no BCC and the properties stay as they are)."""
    table = header.headers
    if not table:
        return [], None
    typed = table.typed()
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
    props = dataclasses.replace(header.properties(), headers=typed)
    return keys, encode_properties(props)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
