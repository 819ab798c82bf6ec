"""Topic exchange: RabbitMQ's own test tables, edge cases, and a property test against a regex."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dari.queues import Binding, Destination, QueueRef, VirtualHost
from dari.queues.exchanges import TopicExchange
from dari.queues.exchanges.topic import split_words


def routed(x: TopicExchange, key: str) -> set[str]:
    return {d.name for d in x.route(key, None)}


def bind(x: TopicExchange, key: str, queue: str, args=None) -> Binding:
    b = Binding("t", Destination.queue(queue), key, args or {})
    x.add_binding(b)
    return b


# rabbitmq-server deps/rabbit/test/routing_SUITE.erl, topic1/1
RABBIT_BINDINGS = [
    ("a.b.c", "t1", {}),
    ("a.*.c", "t2", {}),
    ("a.#.b", "t3", {}),
    ("a.b.b.c", "t4", {}),
    ("#", "t5", {}),
    ("#.#", "t6", {}),
    ("#.b", "t7", {}),
    ("*.*", "t8", {}),
    ("a.*", "t9", {}),
    ("*.b.c", "t10", {}),
    ("a.#", "t11", {}),
    ("a.#.#", "t12", {}),
    ("b.b.c", "t13", {}),
    ("a.b.b", "t14", {}),
    ("a.b", "t15", {}),
    ("b.c", "t16", {}),
    ("", "t17", {}),
    ("*.*.*", "t18", {}),
    ("vodka.martini", "t19", {}),
    ("a.b.c", "t20", {}),
    ("*.#", "t21", {}),
    ("#.*.#", "t22", {}),
    ("*.#.#", "t23", {}),
    ("*", "t25", {}),
    ("#.b.#", "t26", {}),
    ("args-test", "t27", {"foo": "bar"}),
    ("args-test", "t27", {"foo": "baz"}),  # same key and queue, different args: two bindings
]

RABBIT_EXPECT_ALL = {
    "a.b.c": "t1 t2 t5 t6 t10 t11 t12 t18 t20 t21 t22 t23 t26",
    "a.b": "t3 t5 t6 t7 t8 t9 t11 t12 t15 t21 t22 t23 t26",
    "a.b.b": "t3 t5 t6 t7 t11 t12 t14 t18 t21 t22 t23 t26",
    "": "t5 t6 t17",
    "b.c.c": "t5 t6 t18 t21 t22 t23 t26",
    "a.a.a.a.a": "t5 t6 t11 t12 t21 t22 t23",
    "vodka.gin": "t5 t6 t8 t21 t22 t23",
    "vodka.martini": "t5 t6 t8 t19 t21 t22 t23",
    "b.b.c": "t5 t6 t10 t13 t18 t21 t22 t23 t26",
    "nothing.here.at.all": "t5 t6 t21 t22 t23",
    "oneword": "t5 t6 t21 t22 t23 t25",
    "args-test": "t5 t6 t21 t22 t23 t25 t27",
}

# after removing bindings number 1, 5, 11, 19, 21 and 27 (1-based)
RABBIT_EXPECT_AFTER_REMOVAL = {
    "a.b.c": "t2 t6 t10 t12 t18 t20 t22 t23 t26",
    "a.b": "t3 t6 t7 t8 t9 t12 t15 t22 t23 t26",
    "a.b.b": "t3 t6 t7 t12 t14 t18 t22 t23 t26",
    "": "t6 t17",
    "b.c.c": "t6 t18 t22 t23 t26",
    "a.a.a.a.a": "t6 t12 t22 t23",
    "vodka.gin": "t6 t8 t22 t23",
    "vodka.martini": "t6 t8 t22 t23",
    "b.b.c": "t6 t10 t13 t18 t22 t23 t26",
    "nothing.here.at.all": "t6 t22 t23",
    "oneword": "t6 t22 t23 t25",
    "args-test": "t6 t22 t23 t25 t27",
}


@pytest.fixture
def rabbit_vhost() -> VirtualHost:
    vhost = VirtualHost()
    vhost.declare_exchange("topic_matching-exchange", "topic", durable=True)
    for key, queue, args in RABBIT_BINDINGS:
        if not vhost.has_queue(queue):
            vhost.add_queue(QueueRef(queue, durable=True))
        vhost.bind_queue(queue, "topic_matching-exchange", key, args)
    return vhost


def route_names(vhost: VirtualHost, key: str) -> set[str]:
    return {q.name for q in vhost.route("topic_matching-exchange", key)}


@pytest.mark.parametrize("key", sorted(RABBIT_EXPECT_ALL))
def test_rabbitmq_routing_suite_table(rabbit_vhost, key):
    assert route_names(rabbit_vhost, key) == set(RABBIT_EXPECT_ALL[key].split())


def test_rabbitmq_routing_suite_after_removing_bindings(rabbit_vhost):
    for n in (1, 5, 11, 19, 21, 27):
        key, queue, args = RABBIT_BINDINGS[n - 1]
        rabbit_vhost.unbind_queue(queue, "topic_matching-exchange", key, args)
    for key, expected in RABBIT_EXPECT_AFTER_REMOVAL.items():
        assert route_names(rabbit_vhost, key) == set(expected.split()), key


def test_rabbitmq_routing_suite_nothing_matches_after_exchange_delete(rabbit_vhost):
    exchange = rabbit_vhost.exchange("topic_matching-exchange")
    rabbit_vhost.delete_exchange("topic_matching-exchange")
    for key in ("a.b.c", "b.b.c", ""):
        assert list(exchange.router.route(key, None)) == []
    assert rabbit_vhost.bindings() == []


# rabbitmq-server deps/rabbit/test/rabbit_db_topic_exchange_SUITE.erl
def test_wildcards():
    x = TopicExchange()
    for key, q in [
        ("foo.*", "star"),
        ("foo.#", "hash"),
        ("foo.bar", "exact"),
        ("foo.*.baz", "deep"),
        ("#", "all"),
    ]:
        bind(x, key, q)
    assert routed(x, "foo.bar") == {"all", "exact", "hash", "star"}
    assert routed(x, "foo.bar.baz") == {"all", "deep", "hash"}
    assert routed(x, "foo.bar.baz.qux") == {"all", "hash"}
    assert routed(x, "foo.qux") == {"all", "hash", "star"}
    assert routed(x, "bar.foo") == {"all"}


def test_hash_in_the_middle_and_at_the_start():
    x = TopicExchange()
    for key, q in [("#.c", "q1"), ("#.b.c", "q2"), ("a.#.d", "q3"), ("#.*.#", "q4")]:
        bind(x, key, q)
    assert routed(x, "a.b.c") == {"q1", "q2", "q4"}
    assert routed(x, "c") == {"q1", "q4"}
    assert routed(x, "x.y.b.c") == {"q1", "q2", "q4"}
    assert routed(x, "a.d") == {"q3", "q4"}
    assert routed(x, "a.b.c.d") == {"q3", "q4"}
    assert routed(x, "x") == {"q4"}
    assert routed(x, "x.c") == {"q1", "q4"}


def test_empty_routing_key_matches_only_hash():
    x = TopicExchange()
    bind(x, "#", "hash")
    bind(x, "foo.bar", "exact")
    bind(x, "*", "star")
    assert routed(x, "") == {"hash"}
    assert routed(x, "foo.bar") == {"exact", "hash"}


def test_empty_binding_key_matches_only_empty_routing_key():
    x = TopicExchange()
    bind(x, "", "zero")
    assert routed(x, "") == {"zero"}
    assert routed(x, ".") == set()
    assert routed(x, "a") == set()


def test_deep_hierarchy():
    t = ".".join("abcdefghijklmnopqrstuvwxyz")
    x = TopicExchange()
    bind(x, "#", "all")
    bind(x, t + ".#", "prefix")
    bind(x, t + ".*", "prefix-star")
    assert routed(x, t) == {"all", "prefix"}
    assert routed(x, t + ".1") == {"all", "prefix", "prefix-star"}


def test_all_single_wildcards_then_hash():
    x = TopicExchange()
    bind(x, ".".join(["*"] * 26) + ".#", "wild")
    assert routed(x, ".".join("abcdefghijklmnopqrstuvwxyz")) == {"wild"}


def test_alternating_literals_and_wildcards():
    x = TopicExchange()
    bind(x, "a.*.c.*.e.*.g.*.i.*.k.*.m.*.o.*.q.*.s.*.u.*.w.*.y.*.#", "alt")
    assert routed(x, ".".join("abcdefghijklmnopqrstuvwxyz")) == {"alt"}


def test_many_hashes_route_without_exponential_blowup():
    # 15 '#' against 31 words reach one state along C(46, 15) paths.
    x = TopicExchange()
    bind(x, ".".join(["#"] * 15), "many")
    bind(x, ".".join(["#"] * 15) + ".b", "many-b")
    assert routed(x, ".".join(["a"] * 31)) == {"many"}


def test_overlapping_filters():
    x = TopicExchange()
    for key, q in [
        ("a.b", "q1"),
        ("a.b.#", "q2"),
        ("a.b.c", "q3"),
        ("a.b.*", "q4"),
        ("a.b.d", "q5"),
        ("a.*.*", "q6"),
        ("a.*.#", "q7"),
        ("*.b.c", "q8"),
    ]:
        bind(x, key, q)
    assert routed(x, "a.b.c") == {"q2", "q3", "q4", "q6", "q7", "q8"}
    assert routed(x, "a.b") == {"q1", "q2", "q7"}


def test_empty_segments():
    x = TopicExchange()
    bind(x, ".#", "hash")
    bind(x, ".*", "star")
    bind(x, ".*.a.b.c", "deep")
    assert routed(x, ".0.a.b.c") == {"hash", "deep"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a..b", {"a.*.b", "a..b", "#", "a.#.b", "#.*", "a.#"}),
        (".", {"*.*", ".", "#", "#.*"}),
        ("", {"#"}),
        ("a.", {"*.*", "a.*", "#", "#.*", "a.#"}),
    ],
)
def test_empty_words_are_words(key, expected):
    x = TopicExchange()
    patterns = ["a.*.b", "a..b", "#", "a.#.b", "*.*", ".", "#.*", "a.*", "a.#", "*"]
    for p in patterns:
        bind(x, p, p)
    assert routed(x, key) == expected


def test_large_fanout_on_one_key():
    x = TopicExchange()
    for i in range(500):
        bind(x, "events.user.login", f"q-{i}")
    assert routed(x, "events.user.login") == {f"q-{i}" for i in range(500)}


def test_exchange_destinations_are_returned_too():
    x = TopicExchange()
    x.add_binding(Binding("src", Destination.queue("q-direct"), "events.*.critical"))
    x.add_binding(Binding("src", Destination.exchange("x-dest"), "events.#"))
    x.add_binding(Binding("src", Destination.queue("q-via"), "events.app.critical"))
    assert set(x.route("events.app.critical", None)) == {
        Destination.queue("q-direct"),
        Destination.exchange("x-dest"),
        Destination.queue("q-via"),
    }
    assert list(x.route("events.db.info", None)) == [Destination.exchange("x-dest")]


def test_unicode_words():
    x = TopicExchange()
    for key, q in [
        ("传感器.温度.摄氏", "cjk"),
        ("🏠.🌡️.📊", "emoji"),
        ("датчик.температура.цельсий", "cyrillic"),
        ("传感器.*.摄氏", "wild"),
        ("датчик.#", "hash"),
        ("#", "all"),
    ]:
        bind(x, key, q)
    assert routed(x, "传感器.温度.摄氏") == {"cjk", "wild", "all"}
    assert routed(x, "🏠.🌡️.📊") == {"emoji", "all"}
    assert routed(x, "датчик.температура.цельсий") == {"cyrillic", "hash", "all"}
    assert routed(x, "传感器.压力.摄氏") == {"wild", "all"}
    assert routed(x, "датчик.давление") == {"hash", "all"}


def test_literal_star_and_hash_words_in_routing_keys():
    x = TopicExchange()
    bind(x, "a.*", "star")
    bind(x, "a.#", "hash")
    bind(x, "a.b", "b")
    assert routed(x, "a.*") == {"star", "hash"}
    assert routed(x, "a.#") == {"star", "hash"}


def test_trie_is_pruned_when_bindings_go():
    x = TopicExchange()
    keys = ["a.b.c", "a.b.d", "a.*.c", "#.c", "a.#", "#", "", "x.y.z.#.w"]
    bindings = [bind(x, k, f"q{i}") for i, k in enumerate(keys)]
    assert x.node_count() > 1
    for b in reversed(bindings):
        x.remove_binding(b)
    assert x.node_count() == 1
    assert routed(x, "a.b.c") == set()


def test_same_destination_twice_at_one_key_survives_one_removal():
    x = TopicExchange()
    b1 = bind(x, "k.*", "q", {"v": 1})
    bind(x, "k.*", "q", {"v": 2})
    x.remove_binding(b1)
    assert routed(x, "k.z") == {"q"}


# ---------------------------------------------------------------- property: trie == regex


def reference_regex(pattern: str) -> re.Pattern[str]:
    """Each word w of a key is written as '.w'; '#' is any run of such words, '*' exactly one."""
    parts = []
    for word in split_words(pattern):
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    return re.compile("".join(parts))


def reference_matches(pattern: str, key: str) -> bool:
    subject = "".join("." + w for w in split_words(key))
    return reference_regex(pattern).fullmatch(subject) is not None


binding_word = st.sampled_from(["a", "b", "c", "foo", "", "*", "#"])
routing_word = st.sampled_from(["a", "b", "c", "foo", "", "*", "#", "bar"])
binding_key = st.lists(binding_word, max_size=6).map(".".join)
routing_key = st.lists(routing_word, max_size=7).map(".".join)


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(binding_key, min_size=1, max_size=12),
    keys=st.lists(routing_key, min_size=1, max_size=8),
    removals=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_trie_agrees_with_regex_reference(patterns, keys, removals):
    x = TopicExchange()
    live = {}
    for i, p in enumerate(patterns):
        live[i] = (p, bind(x, p, f"q{i}"))
    for i in removals:
        if i in live:
            x.remove_binding(live.pop(i)[1])
    for key in keys:
        expected = {f"q{i}" for i, (p, _) in live.items() if reference_matches(p, key)}
        assert routed(x, key) == expected, (key, [p for p, _ in live.values()])


@settings(max_examples=200, deadline=None)
@given(pattern=binding_key, key=routing_key)
def test_single_binding_agrees_with_regex(pattern, key):
    x = TopicExchange()
    bind(x, pattern, "q")
    assert (routed(x, key) == {"q"}) == reference_matches(pattern, key)
