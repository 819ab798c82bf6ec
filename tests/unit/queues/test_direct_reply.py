"""The registry of direct reply-to consumers: names, vhosts, delivery and forgetting."""

from __future__ import annotations

from dari.message import Message
from dari.queues.direct_reply import REPLY_PREFIX, REPLY_QUEUE, ReplyConsumers, is_reply_name


def reply(name: str, body: bytes = b"r") -> Message:
    return Message("", name, body)


def test_a_reply_reaches_the_consumer_of_its_name_only():
    registry = ReplyConsumers()
    got_a: list[Message] = []
    got_b: list[Message] = []
    a = registry.register("/", got_a.append)
    b = registry.register("/", got_b.append)
    assert a != b and a.startswith(REPLY_PREFIX) and b.startswith(REPLY_PREFIX)
    assert registry.deliver("/", reply(a, b"for a"))
    assert [m.body for m in got_a] == [b"for a"] and got_b == []


def test_names_are_long_random_and_not_reused():
    registry = ReplyConsumers()
    names = {registry.register("/", lambda _m: None) for _ in range(200)}
    assert len(names) == 200
    assert all(len(name) >= len(REPLY_PREFIX) + 32 for name in names)


def test_an_unregistered_or_unknown_name_delivers_nothing():
    registry = ReplyConsumers()
    got: list[Message] = []
    name = registry.register("/", got.append)
    registry.unregister(name)
    registry.unregister(name)  # twice is harmless
    assert not registry.deliver("/", reply(name))
    assert not registry.deliver("/", reply(REPLY_PREFIX + "guess"))
    assert not registry.exists("/", name)
    assert got == [] and len(registry) == 0


def test_a_name_works_only_in_its_vhost():
    registry = ReplyConsumers()
    got: list[Message] = []
    name = registry.register("/", got.append)
    assert registry.exists("/", name) and not registry.exists("other", name)
    assert not registry.deliver("other", reply(name))
    assert got == []


def test_reply_names():
    assert is_reply_name(REPLY_QUEUE) and is_reply_name(REPLY_PREFIX + "x")
    assert not is_reply_name("amq.rabbitmq") and not is_reply_name("reply-to")
