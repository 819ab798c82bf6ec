"""The routing examples of the AMQP model: direct, fanout, topic and exchange-to-exchange."""

from __future__ import annotations

from .amqp_clients import channel, get_all


def test_direct_exchange_routes_by_exact_key(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.exchange_declare(f"{name}-direct", "direct", auto_delete=True)
        for key in ("kong", "black"):
            ch.queue_declare(f"{name}-{key}", exclusive=True)
            ch.queue_bind(f"{name}-{key}", f"{name}-direct", routing_key=key)

        ch.basic_publish(f"{name}-direct", "kong", b"to kong")
        ch.basic_publish(f"{name}-direct", "black", b"to black")
        ch.basic_publish(f"{name}-direct", "kong.black", b"to nobody")

        kong = get_all(ch, f"{name}-kong")
        black = get_all(ch, f"{name}-black")
        assert [g.body for g in kong] == [b"to kong"], "key kong must reach only the kong queue"
        assert [g.body for g in black] == [b"to black"]
        assert (kong[0].exchange, kong[0].routing_key) == (f"{name}-direct", "kong")


def test_direct_exchange_one_key_bound_to_two_queues_reaches_both(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.exchange_declare(f"{name}-direct", "direct", auto_delete=True)
        for q in ("a", "b"):
            ch.queue_declare(f"{name}-{q}", exclusive=True)
            ch.queue_bind(f"{name}-{q}", f"{name}-direct", routing_key="kong")
        ch.basic_publish(f"{name}-direct", "kong", b"both")
        assert [g.body for g in get_all(ch, f"{name}-a")] == [b"both"]
        assert [g.body for g in get_all(ch, f"{name}-b")] == [b"both"]


def test_fanout_copies_every_message_to_every_bound_queue(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.exchange_declare(f"{name}-fanout", "fanout", auto_delete=True)
        queues = [f"{name}-q{i}" for i in range(3)]
        for q in queues:
            ch.queue_declare(q, exclusive=True)
            ch.queue_bind(q, f"{name}-fanout", routing_key=f"ignored-{q}")
        for i in range(5):
            ch.basic_publish(f"{name}-fanout", "any key at all", f"m{i}".encode())
        expected = [f"m{i}".encode() for i in range(5)]
        for q in queues:
            assert [g.body for g in get_all(ch, q)] == expected, f"{q} missed fanout copies"


def test_topic_bindings_match_words_and_wildcards(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ex = f"{name}-topic"
        ch.exchange_declare(ex, "topic", auto_delete=True)
        patterns = {"usa": "usa.#", "news": "*.news.*", "korea": "korea.news"}
        for q, pattern in patterns.items():
            ch.queue_declare(f"{name}-{q}", exclusive=True)
            ch.queue_bind(f"{name}-{q}", ex, routing_key=pattern)

        ch.basic_publish(ex, "usa.news.weather", b"weather")
        got = {q: [g.body for g in get_all(ch, f"{name}-{q}")] for q in patterns}
        assert got == {"usa": [b"weather"], "news": [b"weather"], "korea": []}, (
            "usa.news.weather must match usa.# and *.news.* but not korea.news"
        )

        ch.basic_publish(ex, "korea.news", b"k")  # korea.news only: *.news.* needs three words
        ch.basic_publish(ex, "usa", b"u")  # '#' matches zero words
        ch.basic_publish(ex, "europe.news.sport.extra", b"none")  # '*' is exactly one word
        got = {q: [g.body for g in get_all(ch, f"{name}-{q}")] for q in patterns}
        assert got == {"usa": [b"u"], "news": [], "korea": [b"k"]}


def test_default_exchange_routes_to_queue_named_by_key(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"direct to queue")
        assert [g.body for g in get_all(ch, name)] == [b"direct to queue"]


def test_exchange_to_exchange_binding_forwards_matching_messages(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        upstream, downstream = f"{name}-up", f"{name}-down"
        ch.exchange_declare(upstream, "topic")
        ch.exchange_declare(downstream, "fanout")
        ch.exchange_bind(destination=downstream, source=upstream, routing_key="orders.*")
        ch.queue_declare(f"{name}-sink", exclusive=True)
        ch.queue_bind(f"{name}-sink", downstream)

        ch.basic_publish(upstream, "orders.created", b"forwarded")
        ch.basic_publish(upstream, "payments.created", b"filtered out")
        got = get_all(ch, f"{name}-sink")
        assert [g.body for g in got] == [b"forwarded"]
        assert (got[0].exchange, got[0].routing_key) == (upstream, "orders.created"), (
            "a delivery names the exchange the message was published to, not the hop"
        )

        ch.exchange_unbind(destination=downstream, source=upstream, routing_key="orders.*")
        ch.basic_publish(upstream, "orders.created", b"after unbind")
        assert get_all(ch, f"{name}-sink") == []
        ch.exchange_delete(upstream)
        ch.exchange_delete(downstream)
