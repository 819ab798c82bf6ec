"""record_death / is_cycle: the x-death rewrite, checked against bytes RabbitMQ 3.10.8 wrote."""

from __future__ import annotations

from dari.message import Field, Message, encode_properties
from dari.protocol.amqp.properties import decode_properties
from dari.queues.dead_letter import headers_of, is_cycle, record_death

# A message published to exchange "dl-golden-in" with key "rk", headers {CC: [cc1], b: 1},
# expiration 60000 and correlation id "c", rejected from "dl-golden-src" (DLX "dl-golden-dlx",
# no x-dead-letter-routing-key) at 1795765241: what RabbitMQ 3.10.8 delivered from the DLQ.
FIRST_IN = bytes.fromhex(
    "25000000001702434341000000085300000003636331016249000000010163053630303030"
)
FIRST_OUT = bytes.fromhex(
    "24000000013b024343410000000853000000036363310162490000000107782d646561746841000000a746"
    "000000a205636f756e746c000000000000000106726561736f6e530000000872656a656374656405717565"
    "7565530000000d646c2d676f6c64656e2d7372630474696d6554000000006b0933f90865786368616e6765"
    "530000000c646c2d676f6c64656e2d696e0c726f7574696e672d6b657973410000000f5300000002726b53"
    "00000003636331136f726967696e616c2d65787069726174696f6e5300000005363030303016782d666972"
    "73742d64656174682d65786368616e6765530000000c646c2d676f6c64656e2d696e13782d66697273742d"
    "64656174682d7175657565530000000d646c2d676f6c64656e2d73726314782d66697273742d6465617468"
    "2d726561736f6e530000000872656a65637465640163"
)


# Properties content_type a/b, delivery_mode 2, expiration 90000, reply_to r, timestamp 77,
# app_id app and headers (in this order) z: L 7, CC: [S cc1, x bin], t: t 5, D: 1.25,
# nested: {z: L 1, a: t 3}, x-death: [{queue q1, reason expired},
# {count L 5, queue q2, reason rejected}, {count l 2, queue dl-golden-src, reason rejected,
# time 1000, exchange old}, {queue q1, reason expired}] -- and what RabbitMQ made of them.
UPDATE_IN = bytes.fromhex(
    "b34803612f6200000135017a4c0000000000000007024343410000001053000000036363317800000003"
    "62696e01747405014444020000007d066e6573746564460000000f017a4c000000000000000101617403"
    "07782d646561746841000000de46000000200571756575655300000002713106726561736f6e53000000"
    "0765787069726564460000003005636f756e744c00000000000000050571756575655300000002713206"
    "726561736f6e530000000872656a6563746564460000005a05636f756e746c0000000000000002057175"
    "657565530000000d646c2d676f6c64656e2d73726306726561736f6e530000000872656a656374656404"
    "74696d655400000000000003e80865786368616e676553000000036f6c64460000002005717565756553"
    "00000002713106726561736f6e530000000765787069726564020172053930303030000000000000004d"
    "03617070"
)
UPDATE_OUT = bytes.fromhex(
    "b24803612f6200000107014444020000007d066e6573746564460000000f017a6c000000000000000101"
    "6174010174740107782d646561746841000000c8460000005a05636f756e746c00000000000000030865"
    "786368616e676553000000036f6c64057175657565530000000d646c2d676f6c64656e2d737263067265"
    "61736f6e530000000872656a65637465640474696d655400000000000003e8460000003005636f756e74"
    "6c00000000000000050571756575655300000002713206726561736f6e530000000872656a6563746564"
    "460000002f05636f756e746c00000000000000020571756575655300000002713106726561736f6e5300"
    "00000765787069726564017a6c0000000000000007020172000000000000004d03617070"
)


def _typed(message: Message) -> dict[str, Field]:
    headers = headers_of(message)
    assert headers is not None
    return headers.typed()


def _message(headers: object = None, *, expiration: str | None = None, **kw: object) -> Message:
    props = encode_properties(headers=headers, expiration=expiration)
    return Message.from_amqp(str(kw.get("exchange", "in")), str(kw.get("rk", "rk")), props, b"b")


def test_first_death_matches_rabbitmq_byte_for_byte() -> None:
    message = Message.from_amqp("dl-golden-in", "rk", FIRST_IN, b"body")
    dead = record_death(message, "dl-golden-src", "rejected", 1795765241, exchange="dl-golden-dlx")
    assert dead.properties == FIRST_OUT
    assert (dead.exchange, dead.routing_key, dead.body) == ("dl-golden-dlx", "rk", b"body")
    assert dead.expiration is None and dead.offset == -1


def test_update_matches_rabbitmq_byte_for_byte() -> None:
    """An existing history, rejected again from dl-golden-src with x-dead-letter-routing-key
    dl-golden-dlq: duplicates grouped, the older entries reversed (3.10's quirk), the matched
    entry counted up keeping its old time and exchange, L and booleans normalised, top-level
    keys sorted, the CC header dropped. See UPDATE_IN for the input."""
    message = Message.from_amqp("", "dl-golden-src", UPDATE_IN, b"body")
    dead = record_death(
        message, "dl-golden-src", "rejected", 1795765000, exchange="", routing_key="dl-golden-dlq"
    )
    assert dead.properties == UPDATE_OUT
    assert dead.routing_key == "dl-golden-dlq" and dead.delivery_mode == 2


def test_repeated_death_moves_to_front_with_count() -> None:
    message = _message({"keep": "me"})
    once = record_death(message, "a", "rejected", 100, exchange="")
    twice = record_death(once, "b", "expired", 200, exchange="")
    thrice = record_death(twice, "a", "rejected", 300, exchange="")
    deaths = _typed(thrice)["x-death"].value
    assert [(d.value["queue"].value, d.value["count"]) for d in deaths] == [
        (b"a", Field("l", 2)),
        (b"b", Field("l", 1)),
    ]
    assert list(deaths[0].value) == ["count", "exchange", "queue", "reason", "routing-keys", "time"]
    assert deaths[0].value["time"] == Field("T", 100), "the entry keeps its first time"
    headers = headers_of(thrice)
    assert headers is not None
    assert headers["keep"] == "me"
    assert headers["x-first-death-queue"] == "a"


def test_per_message_ttl_becomes_original_expiration() -> None:
    dead = record_death(_message(expiration="250"), "q", "expired", 5, exchange="dlx")
    assert dead.expiration is None
    assert decode_properties(dead.properties).expiration is None
    (death,) = _typed(dead)["x-death"].value
    assert death.value["original-expiration"] == Field("S", b"250")
    assert list(death.value) == [
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
        "original-expiration",
    ]


def test_first_death_headers_are_set_once() -> None:
    dead = record_death(_message(), "a", "maxlen", 1, exchange="dlx")
    dead = record_death(dead, "b", "expired", 2, exchange="dlx2")
    headers = headers_of(dead)
    assert headers is not None
    assert (
        headers["x-first-death-queue"],
        headers["x-first-death-reason"],
        headers["x-first-death-exchange"],
    ) == ("a", "maxlen", "in")
    assert headers["x-death"][0]["exchange"] == "dlx", "the second death was published to dlx"


def test_x_death_of_another_type_is_reset() -> None:
    dead = record_death(_message({"x-death": "mangled"}), "q", "rejected", 9, exchange="")
    headers = _typed(dead)
    (death,) = headers["x-death"].value
    assert death.value["count"] == Field("l", 1)
    assert "x-first-death-queue" not in headers


def test_message_without_properties() -> None:
    message = Message.from_amqp("ex", "key", b"\x00\x00", b"")
    dead = record_death(message, "q", "expired", 42, exchange="dlx", routing_key="")
    assert dead.routing_key == "", "an empty x-dead-letter-routing-key is a routing key"
    (death,) = _typed(dead)["x-death"].value
    assert death.value["routing-keys"] == Field("A", [Field("S", b"key")])
    assert death.value["time"] == Field("T", 42)


def test_cycle_detection() -> None:
    a_expired = record_death(_message(), "a", "expired", 1, exchange="")
    assert is_cycle(a_expired, "a"), "expired straight back into itself"
    assert not is_cycle(a_expired, "b")
    b_expired = record_death(a_expired, "b", "expired", 2, exchange="")
    assert is_cycle(b_expired, "a"), "a -> b -> a with only expiries"
    a_rejected = record_death(_message(), "a", "rejected", 1, exchange="")
    b_after_reject = record_death(a_rejected, "b", "expired", 2, exchange="")
    assert not is_cycle(b_after_reject, "a"), "a rejection in the cycle lets it through"
    assert not is_cycle(_message(), "a")
