"""ChannelAccess: RabbitMQ's permission checks in RabbitMQ's order, over a real broker model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import commands

from dari.queues.broker import AMQPBroker, User
from dari.queues.errors import AccessRefused
from dari.queues.permissions import Permissions
from dari.server.amqp_access import ChannelAccess
from dari.storage import FlushScheduler, LogConfig

USERS = {
    "guest": User("guest", "guest", True, ("*",)),
    "scoped": User("scoped", "pw", permissions={"/": Permissions("^cfg-", "^wr-", "^rd-")}),
}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[AMQPBroker]:
    flusher = FlushScheduler()
    broker = AMQPBroker(tmp_path, flusher, LogConfig(), USERS)
    broker.load()
    yield broker
    broker.close()
    await flusher.aclose()


async def test_full_permissions_skip_every_check(broker: AMQPBroker) -> None:
    access = ChannelAccess(broker, "/", "guest")
    assert access.restricted() is None
    access.permit("configure", "queue", "anything")


async def test_an_unknown_user_has_no_access(broker: AMQPBroker) -> None:
    access = ChannelAccess(broker, "/", "nobody")
    with pytest.raises(AccessRefused):
        access.permit("read", "queue", "q")


async def test_write_permission_is_cached_per_exchange(broker: AMQPBroker) -> None:
    access = ChannelAccess(broker, "/", "scoped")
    access.permit_write("wr-logs")
    assert access.writable == {"wr-logs"}
    with pytest.raises(AccessRefused) as exc:
        access.permit_write("")  # the default exchange is checked as amq.default
    assert "write access to exchange 'amq.default'" in exc.value.reply_text
    assert access.writable == {"wr-logs"}


async def test_passive_declare_needs_any_permission(broker: AMQPBroker) -> None:
    access = ChannelAccess(broker, "/", "scoped")
    access.permit_queue_declare(commands.Queue.Declare(queue="rd-q", passive=True))
    with pytest.raises(AccessRefused, match="configure access to queue 'other'"):
        access.permit_queue_declare(commands.Queue.Declare(queue="other", passive=True))


async def test_binding_checks_write_on_the_destination_then_read_on_the_source(
    broker: AMQPBroker,
) -> None:
    access = ChannelAccess(broker, "/", "scoped")
    with pytest.raises(AccessRefused, match="write access to queue 'cfg-q'"):
        access.permit_binding("queue", "cfg-q", "cfg-x")
    with pytest.raises(AccessRefused, match="read access to exchange 'cfg-x'"):
        access.permit_binding("queue", "wr-q", "cfg-x")
    access.permit_binding("queue", "wr-q", "rd-x")


async def test_a_new_queue_with_a_dead_letter_exchange_needs_write_there(
    broker: AMQPBroker,
) -> None:
    access = ChannelAccess(broker, "/", "scoped")
    declare = commands.Queue.Declare(
        queue="cfg-q", arguments={"x-dead-letter-exchange": "cfg-dlx"}
    )
    with pytest.raises(AccessRefused, match="read access to queue 'cfg-q'"):
        access.permit_queue_declare(declare)
