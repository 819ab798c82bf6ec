"""Access checks of one AMQP channel: RabbitMQ's configure/write/read permissions.

Every exchange and queue method asks ``ChannelAccess`` before it touches the vhost, in the order
RabbitMQ checks (so the same request gets the same error code); a refusal is the domain's
``AccessRefused`` (403), which the channel turns into a channel.close. No I/O.
"""

from __future__ import annotations

import secrets
from typing import Any

from dari.queues.broker import AMQPBroker
from dari.queues.exchanges import exchange_type
from dari.queues.permissions import (
    CONFIGURE,
    NO_ACCESS,
    READ,
    WRITE,
    Permissions,
    check_name,
    refusal,
)

_WRITABLE_CACHE_SIZE = 1024  # exchanges a channel remembers it may publish to


class ChannelAccess:
    """The user's permissions in the channel's vhost; owned by one channel (event loop thread).

    The user's patterns are looked up once, at the first check: a connection's user and vhost
    never change. ``writable`` caches the exchanges already allowed for publishing, so that the
    publish path checks a set instead of a pattern.
    """

    __slots__ = ("_broker", "_perms", "_user", "_vhost", "writable")

    def __init__(self, broker: AMQPBroker, vhost: str, user: str | None) -> None:
        self._broker = broker
        self._vhost = vhost
        self._user = user or ""
        self._perms: Permissions | None = None
        self.writable: set[str] = set()

    def restricted(self) -> Permissions | None:
        """The user's patterns in this vhost, or None when all three are ``.*`` (no checks)."""
        perms = self._perms
        if perms is None:
            user = self._broker.users.get(self._user)
            perms = self._perms = user.permissions_in(self._vhost) if user else NO_ACCESS
        return None if perms.unrestricted else perms

    def permit(self, permission: str, kind: str, name: str) -> None:
        """RabbitMQ's check_resource_access: 403 ACCESS_REFUSED unless the pattern matches."""
        perms = self.restricted()
        if perms is None or perms.allows(permission, check_name(kind, name)):
            return
        raise refusal(permission, kind, name, self._vhost, self._user)

    def permit_queue(self, permission: str, name: str) -> None:
        """A check on a named queue (dari has no ``""`` shortcut for the last declared one:
        that name gets the 404 it would otherwise get)."""
        if name:
            self.permit(permission, "queue", name)

    def permit_passive(self, kind: str, name: str) -> None:
        """Passive declares need any permission (RabbitMQ >= 4.2.7); refused as configure."""
        perms = self.restricted()
        if perms is not None and not perms.allows_any(check_name(kind, name)):
            raise refusal(CONFIGURE, kind, name, self._vhost, self._user)

    def permit_write(self, exchange: str) -> None:
        """The first publish to ``exchange`` on this channel: write permission, then cached."""
        self.permit(WRITE, "exchange", exchange)
        writable = self.writable
        if len(writable) >= _WRITABLE_CACHE_SIZE:
            writable.clear()
        writable.add(exchange)

    def permit_exchange_declare(self, method: Any) -> None:
        """In RabbitMQ's order: type (406), default exchange (403, left to the vhost),
        configure, then for a new exchange with an alternate exchange: read here, write there."""
        name = method.exchange
        if self.restricted() is None or not name:
            return
        if method.passive:
            self.permit_passive("exchange", name)
            return
        exchange_type(method.exchange_type)
        self.permit(CONFIGURE, "exchange", name)
        ae = (method.arguments or {}).get("alternate-exchange")
        vhost = self._broker.vhost(self._vhost)
        new = vhost.get_exchange(name) is None and not name.startswith("amq.")
        if new and isinstance(ae, str):
            self.permit(READ, "exchange", name)
            self.permit(WRITE, "exchange", ae)

    def permit_queue_declare(self, method: Any) -> None:
        """Configure on the queue (a server-named one is checked under a fresh ``amq.gen-``
        name: the name it gets is as random); for a new queue with a dead-letter exchange,
        read on the queue and write on that exchange. A reserved ``amq.`` name is refused first.
        """
        if self.restricted() is None:
            return
        name = method.queue
        if method.passive:
            self.permit_passive("queue", name)
            return
        if name.startswith("amq."):
            return
        name = name or "amq.gen-" + secrets.token_urlsafe(16)
        self.permit(CONFIGURE, "queue", name)
        dlx = (method.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str) and self._broker.vhost(self._vhost).get_queue(name) is None:
            self.permit(READ, "queue", name)
            self.permit(WRITE, "exchange", dlx)

    def permit_binding(self, kind: str, destination: str, source: str) -> None:
        """Write on the destination, then read on the source exchange; a binding to or from
        the default exchange is refused in between (by the vhost)."""
        if kind == "queue":
            self.permit_queue(WRITE, destination)
        else:
            self.permit(WRITE, "exchange", destination)
        if source and (destination or kind == "queue"):
            self.permit(READ, "exchange", source)

    def permit_exchange_delete(self, name: str) -> None:
        """Configure on the exchange (the vhost refuses the default and ``amq.`` ones)."""
        if name and not name.startswith("amq."):
            self.permit(CONFIGURE, "exchange", name)
