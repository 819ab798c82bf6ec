"""VirtualHost: exchange lifecycle, the binding table, e2e routing, auto-delete and persistence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

import pytest

from dari.queues import (
    AccessRefused,
    Binding,
    Destination,
    NotFound,
    PreconditionFailed,
    QueueRef,
    UnknownExchangeType,
    VirtualHost,
    exchange_type_names,
)
from dari.queues.exchanges import ExchangeType, register_exchange_type, unregister_exchange_type


def vhost_with(*queues: str, durable: bool = False) -> VirtualHost:
    vhost = VirtualHost()
    for q in queues:
        vhost.add_queue(QueueRef(q, durable=durable))
    return vhost


def names(handles) -> list[str]:
    return sorted(h.name for h in handles)


# ---------------------------------------------------------------- pre-declared and default


def test_predeclared_exchanges_exist_with_their_types():
    vhost = VirtualHost()
    kinds = {x.name: x.type for x in vhost.exchanges()}
    assert kinds == {
        "": "direct",
        "amq.direct": "direct",
        "amq.fanout": "fanout",
        "amq.topic": "topic",
        "amq.headers": "headers",
        "amq.match": "headers",
    }
    assert all(x.durable and not x.auto_delete and not x.internal for x in vhost.exchanges())
    assert set(exchange_type_names()) >= {"direct", "fanout", "topic", "headers"}


def test_default_exchange_routes_to_the_queue_named_by_the_key():
    vhost = vhost_with("orders", "audit")
    assert names(vhost.route("", "orders")) == ["orders"]
    assert vhost.route("", "missing") == []
    vhost.remove_queue("orders")
    assert vhost.route("", "orders") == []


def test_default_exchange_bindings_are_implicit():
    vhost = vhost_with("q1", "q2")
    assert vhost.implicit_bindings() == [
        Binding("", Destination.queue("q1"), "q1"),
        Binding("", Destination.queue("q2"), "q2"),
    ]
    assert vhost.bindings() == []
    assert vhost.has_binding(Binding("", Destination.queue("q1"), "q1"))
    assert not vhost.has_binding(Binding("", Destination.queue("q1"), "other"))
    assert vhost.bindings_for_destination(Destination.queue("q1")) == [
        Binding("", Destination.queue("q1"), "q1")
    ]


@pytest.mark.parametrize(
    "action",
    [
        lambda v: v.bind_queue("q", "", "q"),
        lambda v: v.unbind_queue("q", "", "q"),
        lambda v: v.bind_exchange("", "amq.direct", "k"),
        lambda v: v.bind_exchange("amq.direct", "", "k"),
        lambda v: v.unbind_exchange("", "amq.fanout"),
        lambda v: v.declare_exchange("", "direct"),
        lambda v: v.declare_exchange("", passive=True),
        lambda v: v.delete_exchange(""),
    ],
)
def test_operations_on_the_default_exchange_are_refused(action):
    vhost = vhost_with("q")
    with pytest.raises(AccessRefused) as err:
        action(vhost)
    assert err.value.reply_code == 403
    assert err.value.reply_text == "operation not permitted on the default exchange"


def test_declaring_a_new_amq_exchange_is_refused():
    vhost = VirtualHost()
    with pytest.raises(AccessRefused) as err:
        vhost.declare_exchange("amq.custom", "direct")
    assert err.value.reply_text == "exchange name 'amq.custom' contains reserved prefix 'amq.*'"


def test_redeclaring_a_predeclared_amq_exchange_equivalently_is_fine():
    vhost = VirtualHost()
    x, created = vhost.declare_exchange("amq.topic", "topic", durable=True)
    assert (x.name, created) == ("amq.topic", False)


def test_deleting_an_amq_exchange_is_refused():
    vhost = VirtualHost()
    with pytest.raises(AccessRefused) as err:
        vhost.delete_exchange("amq.direct")
    assert err.value.reply_text == (
        "deletion of system exchange 'amq.direct' in vhost '/' not allowed"
    )
    assert vhost.get_exchange("amq.direct") is not None


# ---------------------------------------------------------------- declare and equivalence


def test_declare_creates_once_and_then_returns_the_same_exchange():
    vhost = VirtualHost()
    x1, created1 = vhost.declare_exchange("logs", "fanout", durable=True)
    x2, created2 = vhost.declare_exchange("logs", "fanout", durable=True)
    assert created1 and not created2
    assert x1 is x2


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (
            {"type": "fanout"},
            "inequivalent arg 'type' for exchange 'x' in vhost '/': "
            "received 'fanout' but current is 'direct'",
        ),
        (
            {"durable": True},
            "inequivalent arg 'durable' for exchange 'x' in vhost '/': "
            "received 'true' but current is 'false'",
        ),
        (
            {"auto_delete": True},
            "inequivalent arg 'auto_delete' for exchange 'x' in vhost '/': "
            "received 'true' but current is 'false'",
        ),
        (
            {"internal": True},
            "inequivalent arg 'internal' for exchange 'x' in vhost '/': "
            "received 'true' but current is 'false'",
        ),
        (
            {"arguments": {"alternate-exchange": "ae"}},
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': "
            "received the value 'ae' of type 'longstr' but current is none",
        ),
    ],
)
def test_inequivalent_redeclare_fails_with_rabbitmq_text(kwargs, text):
    vhost = VirtualHost()
    vhost.declare_exchange("x", "direct")
    params = {"type": "direct", **kwargs}
    with pytest.raises(PreconditionFailed) as err:
        vhost.declare_exchange("x", params.pop("type"), **params)
    assert err.value.reply_code == 406
    assert err.value.reply_text == text


def test_alternate_exchange_changed_on_redeclare():
    vhost = VirtualHost()
    vhost.declare_exchange("x", "topic", arguments={"alternate-exchange": "ae1"})
    with pytest.raises(PreconditionFailed) as err:
        vhost.declare_exchange("x", "topic", arguments={"alternate-exchange": "ae2"})
    assert err.value.reply_text == (
        "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': "
        "received 'ae2' but current is 'ae1'"
    )
    with pytest.raises(PreconditionFailed) as err:
        vhost.declare_exchange("x", "topic")
    assert err.value.reply_text == (
        "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': "
        "received none but current is the value 'ae1' of type 'longstr'"
    )


def test_other_exchange_arguments_are_not_compared():
    vhost = VirtualHost()
    vhost.declare_exchange("x", "direct", arguments={"custom": 1})
    x, created = vhost.declare_exchange("x", "direct", arguments={"custom": 2})
    assert not created and x.arguments == {"custom": 1}


def test_alternate_exchange_must_be_a_string():
    vhost = VirtualHost()
    with pytest.raises(PreconditionFailed) as err:
        vhost.declare_exchange("x", "direct", arguments={"alternate-exchange": 7})
    assert err.value.reply_text == (
        "invalid type 'long' for arg 'alternate-exchange' in exchange 'x' in vhost '/'"
    )


def test_passive_declare_of_a_missing_exchange_is_not_found():
    vhost = VirtualHost()
    with pytest.raises(NotFound) as err:
        vhost.declare_exchange("x", passive=True)
    assert err.value.reply_code == 404
    assert err.value.reply_text == "no exchange 'x' in vhost '/'"


def test_passive_declare_ignores_type_and_flags():
    vhost = VirtualHost()
    vhost.declare_exchange("x", "topic", durable=True)
    x, created = vhost.declare_exchange("x", "bogus", passive=True)
    assert (x.type, created) == ("topic", False)


def test_unknown_exchange_type():
    vhost = VirtualHost()
    with pytest.raises(UnknownExchangeType) as err:
        vhost.declare_exchange("x", "foo")
    assert isinstance(err.value, PreconditionFailed)
    assert err.value.reply_code == 406
    assert err.value.reply_text == "unknown exchange type 'foo'"
    assert vhost.get_exchange("x") is None


def test_vhost_name_appears_in_reply_texts():
    vhost = VirtualHost("prod")
    with pytest.raises(NotFound) as err:
        vhost.route("nope", "k")
    assert err.value.reply_text == "no exchange 'nope' in vhost 'prod'"


def test_a_registered_exchange_type_becomes_declarable():
    @register_exchange_type
    class FirstBinding(ExchangeType):
        """Routes to the earliest binding only."""

        name = "x-first"

        def __init__(self) -> None:
            self.order: list[Binding] = []

        def add_binding(self, binding):
            self.order.append(binding)

        def remove_binding(self, binding):
            self.order.remove(binding)

        def route(self, routing_key, headers):
            return [self.order[0].destination] if self.order else []

    try:
        vhost = vhost_with("q1", "q2")
        vhost.declare_exchange("first", "x-first")
        vhost.bind_queue("q2", "first")
        vhost.bind_queue("q1", "first")
        assert names(vhost.route("first", "k")) == ["q2"]
    finally:
        unregister_exchange_type("x-first")
    with pytest.raises(UnknownExchangeType):
        VirtualHost().declare_exchange("again", "x-first")


# ---------------------------------------------------------------- delete


def test_delete_missing_exchange_succeeds_and_changes_nothing():
    vhost = VirtualHost()
    assert not vhost.delete_exchange("ghost")


def test_delete_if_unused_refuses_an_exchange_with_bindings_as_source():
    vhost = vhost_with("q")
    vhost.declare_exchange("x", "direct")
    vhost.bind_queue("q", "x", "k")
    with pytest.raises(PreconditionFailed) as err:
        vhost.delete_exchange("x", if_unused=True)
    assert err.value.reply_text == "exchange 'x' in vhost '/' in use"
    vhost.unbind_queue("q", "x", "k")
    assert vhost.delete_exchange("x", if_unused=True).exchanges[0].name == "x"


def test_delete_if_unused_ignores_bindings_as_destination():
    vhost = VirtualHost()
    vhost.declare_exchange("dst", "fanout")
    vhost.bind_exchange("dst", "amq.fanout")
    deletions = vhost.delete_exchange("dst", if_unused=True)
    assert [x.name for x in deletions.exchanges] == ["dst"]
    assert deletions.bindings == [Binding("amq.fanout", Destination.exchange("dst"))]
    assert vhost.bindings() == []


def test_delete_removes_bindings_at_both_ends():
    vhost = vhost_with("q")
    vhost.declare_exchange("mid", "fanout")
    vhost.bind_exchange("mid", "amq.topic", "#")
    vhost.bind_queue("q", "mid")
    deletions = vhost.delete_exchange("mid")
    assert len(deletions.bindings) == 2
    assert vhost.bindings() == []
    assert vhost.route("amq.topic", "a.b") == []


# ---------------------------------------------------------------- bindings


def test_bind_to_missing_exchange_or_queue_is_not_found():
    vhost = vhost_with("q")
    with pytest.raises(NotFound) as err:
        vhost.bind_queue("q", "nope", "k")
    assert err.value.reply_text == "no exchange 'nope' in vhost '/'"
    with pytest.raises(NotFound) as err:
        vhost.bind_queue("nope", "amq.direct", "k")
    assert err.value.reply_text == "no queue 'nope' in vhost '/'"
    with pytest.raises(NotFound) as err:
        vhost.bind_exchange("nope", "amq.direct", "k")
    assert err.value.reply_text == "no exchange 'nope' in vhost '/'"
    with pytest.raises(NotFound) as err:
        vhost.bind_queue("nope", "nope-x", "k")
    assert err.value.reply_text == "no exchange 'nope-x' in vhost '/'"


def test_binding_twice_is_idempotent():
    vhost = vhost_with("q")
    assert vhost.bind_queue("q", "amq.direct", "k")
    assert not vhost.bind_queue("q", "amq.direct", "k")
    assert len(vhost.bindings()) == 1


def test_unbinding_what_is_not_bound_succeeds():
    vhost = vhost_with("q")
    assert not vhost.unbind_queue("q", "amq.direct", "k")
    assert not vhost.unbind_queue("ghost", "ghost-x", "k")


def test_bindings_differing_only_in_arguments_are_distinct():
    # rabbitmq-server bindings_SUITE.erl, binding_args_direct_exchange/1
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.direct", "some-key", {"app": "app-1"})
    vhost.bind_queue("q", "amq.direct", "some-key", {"app": "app-2"})
    assert len(vhost.bindings()) == 2
    assert names(vhost.route("amq.direct", "some-key")) == ["q"]
    vhost.unbind_queue("q", "amq.direct", "some-key", {"app": "app-1"})
    assert names(vhost.route("amq.direct", "some-key")) == ["q"]
    vhost.unbind_queue("q", "amq.direct", "some-key", {"app": "app-2"})
    assert vhost.route("amq.direct", "some-key") == []


def test_argument_identity_keeps_value_types_apart():
    vhost = vhost_with("q")
    vhost.bind_queue("q", "amq.fanout", "", {"n": 1})
    assert not vhost.bind_queue("q", "amq.fanout", "", {"n": 1})
    assert vhost.bind_queue("q", "amq.fanout", "", {"n": True})
    assert vhost.bind_queue("q", "amq.fanout", "", {"n": 1.0})
    assert len(vhost.bindings()) == 3


def test_topic_zero_word_key_does_not_leak_between_exchanges():
    # bindings_SUITE.erl, topic_exchange_zero_words/1
    vhost = vhost_with("q1", "q2")
    vhost.declare_exchange("x1", "topic")
    vhost.declare_exchange("x2", "topic")
    vhost.bind_queue("q1", "x1", "")
    vhost.bind_queue("q2", "x2", "")
    assert names(vhost.route("x1", "")) == ["q1"]
    assert names(vhost.route("x2", "")) == ["q2"]


def test_listing_by_source_and_destination():
    vhost = vhost_with("q")
    vhost.declare_exchange("x", "fanout")
    b1 = Binding("amq.direct", Destination.queue("q"), "k")
    b2 = Binding("x", Destination.queue("q"))
    b3 = Binding("amq.topic", Destination.exchange("x"), "#")
    for b in (b1, b2, b3):
        vhost.add_binding(b)
    assert vhost.bindings_for_source("amq.direct") == [b1]
    assert vhost.bindings_for_destination(Destination.exchange("x")) == [b3]
    assert set(vhost.bindings_for_destination(Destination.queue("q"))) == {
        Binding("", Destination.queue("q"), "q"),
        b1,
        b2,
    }


def test_removing_a_queue_drops_its_bindings():
    vhost = vhost_with("q", "keep")
    vhost.bind_queue("q", "amq.direct", "a")
    vhost.bind_queue("q", "amq.topic", "a.#")
    vhost.bind_queue("keep", "amq.direct", "a")
    deletions = vhost.remove_queue("q")
    assert {b.source for b in deletions.bindings} == {"amq.direct", "amq.topic"}
    assert names(vhost.route("amq.direct", "a")) == ["keep"]
    assert vhost.route("amq.topic", "a.b") == []
    assert not vhost.has_queue("q")


def test_registering_a_different_queue_under_a_taken_name_is_an_error():
    vhost = vhost_with("q")
    vhost.add_queue(vhost.get_queue("q"))  # same handle: fine
    with pytest.raises(ValueError):
        vhost.add_queue(QueueRef("q", durable=True))


# ---------------------------------------------------------------- e2e routing


def test_exchange_to_exchange_routing_is_transitive():
    vhost = vhost_with("q-direct", "q-deep")
    vhost.declare_exchange("mid", "topic")
    vhost.declare_exchange("leaf", "fanout")
    vhost.bind_queue("q-direct", "amq.direct", "k")
    vhost.bind_exchange("mid", "amq.direct", "k")
    vhost.bind_exchange("leaf", "mid", "k.#")
    vhost.bind_exchange("leaf", "mid", "#")
    vhost.bind_queue("q-deep", "leaf")
    assert names(vhost.route("amq.direct", "k")) == ["q-deep", "q-direct"]
    assert vhost.route("amq.direct", "other") == []


def test_cycles_terminate_and_each_queue_is_returned_once():
    vhost = vhost_with("qa", "qb", "qc")
    for name in ("a", "b", "c"):
        vhost.declare_exchange(name, "fanout")
    vhost.bind_exchange("b", "a")
    vhost.bind_exchange("c", "b")
    vhost.bind_exchange("a", "c")  # a -> b -> c -> a
    vhost.bind_exchange("a", "a")  # self loop
    vhost.bind_queue("qa", "a")
    vhost.bind_queue("qb", "b")
    vhost.bind_queue("qc", "c")
    vhost.bind_queue("qa", "c", "other")
    for start in ("a", "b", "c"):
        result = vhost.route(start, "k")
        assert names(result) == ["qa", "qb", "qc"]
        assert len(result) == 3


def test_diamond_delivers_once():
    vhost = vhost_with("q")
    for name in ("left", "right", "bottom"):
        vhost.declare_exchange(name, "fanout")
    vhost.bind_exchange("left", "amq.fanout")
    vhost.bind_exchange("right", "amq.fanout")
    vhost.bind_exchange("bottom", "left")
    vhost.bind_exchange("bottom", "right")
    vhost.bind_queue("q", "bottom")
    assert names(vhost.route("amq.fanout", "")) == ["q"]


def test_internal_exchange_refuses_publishes_but_routes_via_bindings():
    vhost = vhost_with("q")
    vhost.declare_exchange("hidden", "fanout", internal=True)
    vhost.bind_queue("q", "hidden")
    vhost.bind_exchange("hidden", "amq.direct", "k")
    with pytest.raises(AccessRefused) as err:
        vhost.route("hidden", "k")
    assert err.value.reply_text == "cannot publish to internal exchange 'hidden' in vhost '/'"
    assert names(vhost.route("hidden", "k", allow_internal=True)) == ["q"]
    assert names(vhost.route("amq.direct", "k")) == ["q"]


def test_publish_to_missing_exchange_is_not_found():
    vhost = VirtualHost()
    with pytest.raises(NotFound) as err:
        vhost.route("missing", "k")
    assert err.value.reply_text == "no exchange 'missing' in vhost '/'"


def test_alternate_exchange_takes_unroutable_messages():
    vhost = vhost_with("routed", "unrouted")
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    vhost.bind_queue("routed", "main", "known")
    vhost.bind_queue("unrouted", "ae")
    assert names(vhost.route("main", "known")) == ["routed"]
    assert names(vhost.route("main", "unknown")) == ["unrouted"]


def test_alternate_exchange_cycle_and_missing_alternate():
    vhost = vhost_with("q")
    vhost.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    vhost.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    vhost.declare_exchange("c", "direct", arguments={"alternate-exchange": "gone"})
    assert vhost.route("a", "k") == []
    assert vhost.route("c", "k") == []
    vhost.declare_exchange("to-default", "direct", arguments={"alternate-exchange": ""})
    assert names(vhost.route("to-default", "q")) == ["q"]


# ---------------------------------------------------------------- auto-delete


def test_auto_delete_exchange_goes_when_its_last_source_binding_is_removed():
    vhost = vhost_with("q1", "q2")
    vhost.declare_exchange("tmp", "direct", auto_delete=True)
    vhost.bind_queue("q1", "tmp", "a")
    vhost.bind_queue("q2", "tmp", "b")
    assert not vhost.unbind_queue("q1", "tmp", "a").exchanges
    deletions = vhost.unbind_queue("q2", "tmp", "b")
    assert [x.name for x in deletions.exchanges] == ["tmp"]
    assert vhost.get_exchange("tmp") is None


def test_auto_delete_exchange_without_bindings_stays_until_one_is_removed():
    vhost = vhost_with("q")
    vhost.declare_exchange("tmp", "fanout", auto_delete=True)
    assert vhost.get_exchange("tmp") is not None
    vhost.bind_exchange("tmp", "amq.fanout")  # as destination: does not count
    vhost.unbind_exchange("tmp", "amq.fanout")
    assert vhost.get_exchange("tmp") is not None


def test_auto_delete_when_the_bound_queue_is_removed():
    vhost = vhost_with("q")
    vhost.declare_exchange("tmp", "fanout", auto_delete=True)
    vhost.bind_queue("q", "tmp")
    deletions = vhost.remove_queue("q")
    assert [x.name for x in deletions.exchanges] == ["tmp"]


def test_auto_delete_cascades_through_exchange_bindings():
    vhost = vhost_with("q")
    vhost.declare_exchange("outer", "fanout", auto_delete=True)
    vhost.declare_exchange("inner", "fanout", auto_delete=True)
    vhost.bind_exchange("inner", "outer")
    vhost.bind_queue("q", "inner")
    deletions = vhost.remove_queue("q")
    # inner loses its last source binding, goes, and takes outer's only binding with it
    assert [x.name for x in deletions.exchanges] == ["inner", "outer"]
    assert len(deletions.bindings) == 2
    assert vhost.bindings() == []


def test_deleting_a_destination_exchange_auto_deletes_its_source():
    vhost = VirtualHost()
    vhost.declare_exchange("src", "fanout", auto_delete=True)
    vhost.declare_exchange("dst", "fanout")
    vhost.bind_exchange("dst", "src")
    deletions = vhost.delete_exchange("dst")
    assert [x.name for x in deletions.exchanges] == ["dst", "src"]


# ---------------------------------------------------------------- persistence


@dataclass(frozen=True)
class StoredQueue:
    name: str
    durable: bool


def test_snapshot_holds_durable_exchanges_and_bindings_between_durable_ends():
    vhost = VirtualHost()
    vhost.add_queue(StoredQueue("dq", True))
    vhost.add_queue(StoredQueue("tq", False))
    vhost.declare_exchange("dx", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    vhost.declare_exchange("tx", "fanout")
    vhost.bind_queue("dq", "dx", "a.#", {"bin": b"\x00\xff", "dec": Decimal("1.5"), "t": {"n": 1}})
    vhost.bind_queue("tq", "dx", "b.*")
    vhost.bind_queue("dq", "tx")
    vhost.bind_exchange("dx", "amq.topic", "#")
    snap = vhost.snapshot()
    data = json.loads(json.dumps(snap))

    assert {x["name"] for x in data["exchanges"]} == {
        "dx",
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    }
    assert {(b["source"], b["destination"]) for b in data["bindings"]} == {
        ("dx", "dq"),
        ("amq.topic", "dx"),
    }

    fresh = VirtualHost()
    fresh.add_queue(StoredQueue("dq", True))
    assert fresh.restore(data) == []
    assert fresh.exchange("dx").arguments == {"alternate-exchange": "ae"}
    assert fresh.exchange("dx").durable
    assert [h.name for h in fresh.route("amq.topic", "a.x")] == ["dq"]
    restored = fresh.bindings_for_source("dx")
    assert restored == [
        Binding(
            "dx",
            Destination.queue("dq"),
            "a.#",
            {"bin": b"\x00\xff", "dec": Decimal("1.5"), "t": {"n": 1}},
        )
    ]
    assert fresh.snapshot() == snap


def test_restore_skips_bindings_whose_queue_was_not_registered():
    vhost = VirtualHost()
    vhost.add_queue(StoredQueue("dq", True))
    vhost.bind_queue("dq", "amq.direct", "k")
    snap = vhost.snapshot()
    fresh = VirtualHost()
    skipped = fresh.restore(snap)
    assert [s["destination"] for s in skipped] == ["dq"]
    assert fresh.bindings() == []


def test_restore_rejects_an_unknown_snapshot_version():
    with pytest.raises(ValueError):
        VirtualHost().restore({"version": 99})
