"""The founding document's RabbitMQ routing examples, each as its own acceptance test."""

from __future__ import annotations

from dari.queues import QueueRef, VirtualHost


def names(handles) -> set[str]:
    return {h.name for h in handles}


def vhost_with_queues(*queue_names: str) -> VirtualHost:
    vhost = VirtualHost()
    for name in queue_names:
        vhost.add_queue(QueueRef(name))
    return vhost


def test_direct_exchange_delivers_only_to_the_exact_key_kong():
    vhost = vhost_with_queues("A", "B")
    vhost.declare_exchange("x.direct", "direct")
    vhost.bind_queue("A", "x.direct", "kong")
    vhost.bind_queue("B", "x.direct", "black")

    assert names(vhost.route("x.direct", "kong")) == {"A"}


def test_direct_exchange_key_black_reaches_only_queue_b():
    vhost = vhost_with_queues("A", "B")
    vhost.declare_exchange("x.direct", "direct")
    vhost.bind_queue("A", "x.direct", "kong")
    vhost.bind_queue("B", "x.direct", "black")

    assert names(vhost.route("x.direct", "black")) == {"B"}
    assert vhost.route("x.direct", "Kong") == []


def test_fanout_exchange_copies_to_all_three_queues_ignoring_the_key():
    vhost = vhost_with_queues("A", "B", "C")
    vhost.declare_exchange("x.fanout", "fanout")
    for q in ("A", "B", "C"):
        vhost.bind_queue(q, "x.fanout", f"ignored-{q}")

    assert names(vhost.route("x.fanout", "anything")) == {"A", "B", "C"}
    assert names(vhost.route("x.fanout", "")) == {"A", "B", "C"}


def test_topic_usa_hash_receives_usa_news_weather():
    vhost = vhost_with_queues("A")
    vhost.declare_exchange("x.topic", "topic")
    vhost.bind_queue("A", "x.topic", "usa.#")

    assert names(vhost.route("x.topic", "usa.news.weather")) == {"A"}


def test_topic_star_news_star_receives_usa_news_weather():
    vhost = vhost_with_queues("B")
    vhost.declare_exchange("x.topic", "topic")
    vhost.bind_queue("B", "x.topic", "*.news.*")

    assert names(vhost.route("x.topic", "usa.news.weather")) == {"B"}


def test_topic_korea_news_does_not_receive_usa_news_weather():
    vhost = vhost_with_queues("C")
    vhost.declare_exchange("x.topic", "topic")
    vhost.bind_queue("C", "x.topic", "korea.news")

    assert vhost.route("x.topic", "usa.news.weather") == []


def test_topic_all_three_bindings_together():
    vhost = vhost_with_queues("A", "B", "C")
    vhost.declare_exchange("x.topic", "topic")
    vhost.bind_queue("A", "x.topic", "usa.#")
    vhost.bind_queue("B", "x.topic", "*.news.*")
    vhost.bind_queue("C", "x.topic", "korea.news")

    assert names(vhost.route("x.topic", "usa.news.weather")) == {"A", "B"}
    assert names(vhost.route("x.topic", "korea.news")) == {"C"}


def test_binding_compares_the_error_key_as_in_the_seed_section_3_3():
    vhost = vhost_with_queues("errors", "all")
    vhost.bind_queue("errors", "amq.direct", "error")
    vhost.bind_queue("all", "amq.direct", "error")
    vhost.bind_queue("all", "amq.direct", "info")

    assert names(vhost.route("amq.direct", "error")) == {"errors", "all"}
    assert names(vhost.route("amq.direct", "info")) == {"all"}
    assert vhost.route("amq.direct", "debug") == []
