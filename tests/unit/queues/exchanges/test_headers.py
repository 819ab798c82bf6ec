"""Headers exchange: RabbitMQ's x-match rules (rabbit_exchange_type_headers.erl)."""

from __future__ import annotations

import pytest

from dari.queues import PreconditionFailed, QueueRef, VirtualHost


def vhost_with(*queues: str) -> VirtualHost:
    vhost = VirtualHost()
    for q in queues:
        vhost.add_queue(QueueRef(q))
    return vhost


def names(handles) -> set[str]:
    return {h.name for h in handles}


# rabbitmq-server deps/rabbit/test/exchanges_SUITE.erl, headers_exchange/1
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"foo": "bar", "fuu": "ber"}, {"all", "any"}),
        ({"foo": "bar"}, {"any"}),
        (None, set()),
        ({"foo": "bar", "fuu": "other"}, {"any"}),
        ({"foo": "bar", "fuu": "ber", "extra": 1}, {"all", "any"}),
    ],
)
def test_all_and_any(headers, expected):
    vhost = vhost_with("all", "any")
    args = {"foo": "bar", "fuu": "ber"}
    vhost.bind_queue("all", "amq.headers", "", {"x-match": "all", **args})
    vhost.bind_queue("any", "amq.headers", "", {"x-match": "any", **args})
    assert names(vhost.route("amq.headers", "", headers)) == expected


# exchanges_SUITE.erl, headers_exchange_key_presence_only/1
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"foo": "anything", "x-foo": 42}, {"all", "any"}),
        ({"foo": "whatever"}, {"any"}),
        ({"x-foo": "something"}, {"any"}),
        ({"other": "value"}, set()),
        (None, set()),
        ({"foo": None, "x-foo": None}, {"all", "any"}),
    ],
)
def test_void_binding_value_means_key_present(headers, expected):
    vhost = vhost_with("all", "any")
    vhost.bind_queue("all", "amq.match", "", {"x-match": "all-with-x", "foo": None, "x-foo": None})
    vhost.bind_queue("any", "amq.match", "", {"x-match": "any-with-x", "foo": None, "x-foo": None})
    assert names(vhost.route("amq.match", "", headers)) == expected


@pytest.mark.parametrize(
    ("mode", "headers", "routed"),
    [
        # plain all/any skip binding arguments whose names start with "x-"
        ("all", {"k": 1}, True),
        ("all", {"k": 1, "x-k": 2}, True),
        ("all-with-x", {"k": 1}, False),
        ("all-with-x", {"k": 1, "x-k": 1}, True),
        ("any", {"x-k": 1}, False),
        ("any-with-x", {"x-k": 1}, True),
        ("any-with-x", {"k": 1}, True),
        ("any", {}, False),
    ],
)
def test_x_prefixed_arguments(mode, headers, routed):
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"x-match": mode, "k": 1, "x-k": 1})
    assert (names(vhost.route("amq.headers", "", headers)) == {"q"}) is routed


def test_missing_x_match_means_all():
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"a": 1, "b": 2})
    assert names(vhost.route("amq.headers", "", {"a": 1, "b": 2})) == {"q"}
    assert vhost.route("amq.headers", "", {"a": 1}) == []


def test_all_with_nothing_to_compare_matches_everything_and_any_nothing():
    vhost = vhost_with("all", "any", "bare")
    vhost.bind_queue("all", "amq.headers", "", {"x-match": "all", "x-ignored": 1})
    vhost.bind_queue("any", "amq.headers", "", {"x-match": "any", "x-ignored": 1})
    vhost.bind_queue("bare", "amq.headers", "")
    assert names(vhost.route("amq.headers", "rk", None)) == {"all", "bare"}


@pytest.mark.parametrize(
    ("bound", "sent", "routed"),
    [
        (1, 1, True),
        (1, 1.0, False),
        (1, True, False),
        (True, True, True),
        (False, 0, False),
        ("v", "v", True),
        ("v", b"v", True),
        (b"\xff", b"\xff", True),
        (1.5, 1.5, True),
        ("1", 1, False),
        ({"n": 1, "s": "x"}, {"s": "x", "n": 1}, True),
        ({"n": 1}, {"n": 1.0}, False),
        ([1, "a"], [1, "a"], True),
        ([1, "a"], ["a", 1], False),
    ],
)
def test_values_must_be_equal_and_of_the_same_kind(bound, sent, routed):
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"x-match": "all", "h": bound})
    assert (names(vhost.route("amq.headers", "", {"h": sent})) == {"q"}) is routed


def test_present_header_with_void_value_does_not_equal_a_bound_value():
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"h": "v"})
    assert vhost.route("amq.headers", "", {"h": None}) == []


def test_invalid_x_match_value_is_rejected_with_rabbitmq_text():
    vhost = vhost_with("q")
    with pytest.raises(PreconditionFailed) as err:
        vhost.bind_queue("q", "amq.headers", "", {"x-match": "some"})
    assert err.value.reply_code == 406
    assert err.value.reply_text == (
        'Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x'
    )
    assert vhost.bindings_for_source("amq.headers") == []


def test_invalid_x_match_type_is_rejected_with_rabbitmq_text():
    vhost = vhost_with("q")
    with pytest.raises(PreconditionFailed) as err:
        vhost.bind_queue("q", "amq.headers", "", {"x-match": 5})
    assert err.value.reply_text == "Invalid x-match field type long (value 5); expected longstr"


def test_unbinding_one_of_two_bindings_to_one_queue_keeps_the_other():
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"x-match": "any", "a": 1})
    vhost.bind_queue("q", "amq.headers", "", {"x-match": "any", "b": 1})
    vhost.unbind_queue("q", "amq.headers", "", {"x-match": "any", "a": 1})
    assert vhost.route("amq.headers", "", {"a": 1}) == []
    assert names(vhost.route("amq.headers", "", {"b": 1})) == {"q"}


def test_a_queue_matched_by_two_bindings_is_routed_once():
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.headers", "", {"x-match": "any", "a": 1})
    vhost.bind_queue("q", "amq.headers", "", {"x-match": "any", "b": 1})
    assert [h.name for h in vhost.route("amq.headers", "", {"a": 1, "b": 1})] == ["q"]
