"""queues.sender_selected: CC/BCC routing through a real routing model, BCC removal."""

from __future__ import annotations

import pytest

from dari.message import Field, Message, encode_properties
from dari.queues import NotFound, PreconditionFailed, QueueRef, VirtualHost
from dari.queues.sender_selected import route, sender_selected


def _vhost(*queues: str) -> VirtualHost:
    vhost = VirtualHost()
    vhost.declare_exchange("x", "direct")
    for name in queues:
        vhost.add_queue(QueueRef(name))
        vhost.bind_queue(name, "x", name)
    return vhost


def _publish(vhost: VirtualHost, exchange: str, key: str, headers: dict | None):
    properties = encode_properties(headers=headers, delivery_mode=2)
    table = Message("", "", b"", properties).headers
    queues, stored = route(vhost, exchange, key, table, properties)
    return [q.name for q in queues], properties, stored


def test_without_headers_it_is_the_exchanges_own_routing() -> None:
    vhost = _vhost("a", "b")
    properties = encode_properties(delivery_mode=2)
    queues, stored = route(vhost, "x", "a", None, properties)
    assert [q.name for q in queues] == ["a"] and stored is properties
    with pytest.raises(NotFound):
        route(vhost, "missing", "a", None, properties)


def test_headers_without_cc_or_bcc_keep_the_properties() -> None:
    names, properties, stored = _publish(_vhost("a", "b"), "x", "a", {"C": "CC", "n": 1})
    assert names == ["a"] and stored is properties


def test_cc_and_bcc_add_routes_once_each_and_bcc_is_removed() -> None:
    vhost = _vhost("a", "b", "c", "d")
    headers = {"x": 1, "CC": ["b", "a"], "BCC": ["c", "b"]}
    names, _properties, stored = _publish(vhost, "x", "a", headers)
    assert names == ["a", "b", "c"]
    assert stored == encode_properties(headers={"x": 1, "CC": ["b", "a"]}, delivery_mode=2)


def test_cc_through_the_default_exchange() -> None:
    names, properties, stored = _publish(_vhost("a", "b"), "", "a", {"CC": ["b", "nowhere"]})
    assert names == ["a", "b"] and stored is properties


def test_cc_alone_can_make_a_message_routable() -> None:
    names, _p, _s = _publish(_vhost("a", "b"), "x", "nowhere", {"CC": ["b"]})
    assert names == ["b"]


def test_non_string_entries_are_ignored_and_kept() -> None:
    names, properties, stored = _publish(_vhost("a", "b"), "x", "a", {"BCC": ["b", 5]})
    assert names == ["a", "b"]
    assert stored == encode_properties(headers={}, delivery_mode=2) != properties


@pytest.mark.parametrize(
    ("name", "value", "type_name"),
    [("CC", "b", "longstr"), ("BCC", Field("l", 5), "long"), ("CC", {"t": 1}, "table")],
)
def test_cc_or_bcc_that_is_not_an_array_is_406(name: str, value: object, type_name: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        _publish(_vhost("a", "b"), "x", "a", {name: value})
    assert str(info.value) == (
        f'invalid message: {{unacceptable_type_in_header,"{name}",{type_name}}}'
    )


def test_sender_selected_on_a_message() -> None:
    headers = {"CC": ["b"], "BCC": [Field("S", b"c"), Field("x", b"d")], "k": "v"}
    message = Message.from_amqp("x", "a", encode_properties(headers=headers), b"body")
    keys, stored = sender_selected(message)
    assert keys == ["b", "c"]
    assert stored is not None and stored.headers == {"CC": ["b"], "k": "v"}
    assert (stored.exchange, stored.routing_key, stored.body) == ("x", "a", b"body")
    assert sender_selected(Message("x", "a", b"")) == ([], None)
