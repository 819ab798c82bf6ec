"""Per-message cost of the AMQP 0-9-1 codec: ours (dari.protocol.amqp) against pamqp.

``python bench/amqp_codec_bench.py [--messages 20000] [--body 256]``

publish decode  one basic.publish + content header (delivery_mode, content_type and a small
                headers table, like a typical pika message) + body frame, from a buffer of N
                such messages: ours drains ``AMQPConnection.next_event`` (framing, state checks
                and assembly included; header fields read: delivery_mode, expiration,
                priority); pamqp runs ``frame.unmarshal`` three times per message.
deliver encode  basic.deliver + forwarded content header + body frame: ours
                ``AMQPConnection.send_deliver``; pamqp ``frame.marshal`` of the three frames.
"""

from __future__ import annotations

import argparse
import time

from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import PROTOCOL_HEADER, AMQPConnection, ContentReceived


def message_frames(body: bytes) -> bytes:
    props = commands.Basic.Properties(
        content_type="application/json", delivery_mode=2, headers={"trace": "abc", "n": 1}
    )
    return b"".join(
        (
            pframe.marshal(commands.Basic.Publish(exchange="ex", routing_key="orders.new"), 1),
            pframe.marshal(pheader.ContentHeader(0, len(body), props), 1),
            pframe.marshal(pbody.ContentBody(body), 1),
        )
    )


def open_connection() -> AMQPConnection:
    conn = AMQPConnection()
    conn.receive_data(PROTOCOL_HEADER)
    conn.next_event()
    conn.send_start()
    steps = [
        commands.Connection.StartOk(response="\0guest\0guest"),
        commands.Connection.TuneOk(2047, 131072, 60),
        commands.Connection.Open("/"),
    ]
    for step, reply in zip(steps, (conn.send_tune, lambda: None, conn.send_open_ok), strict=True):
        conn.receive_data(pframe.marshal(step, 0))
        conn.next_event()
        reply()
    conn.receive_data(pframe.marshal(commands.Channel.Open(), 1))
    conn.next_event()
    conn.send_channel_open_ok(1)
    return conn


def bench_ours_decode(stream: bytes, n: int) -> float:
    conn = open_connection()
    start = time.perf_counter()
    conn.receive_data(stream)
    got = 0
    while (event := conn.next_event()) is not None:
        assert type(event) is ContentReceived
        header = event.header
        header.delivery_mode, header.expiration, header.priority  # noqa: B018
        got += 1
    elapsed = time.perf_counter() - start
    assert got == n, got
    return elapsed / n * 1e6


def bench_pamqp_decode(message: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        pos = 0
        for _ in range(3):
            used, _channel, _frame = pframe.unmarshal(message[pos:])
            pos += used
    elapsed = time.perf_counter() - start
    return elapsed / n * 1e6


def bench_ours_encode(stream: bytes, n: int) -> float:
    conn = open_connection()
    conn.receive_data(stream[: len(stream) // n])
    event = conn.next_event()
    header, body = event.header, bytes(event.body)
    start = time.perf_counter()
    for tag in range(1, n + 1):
        conn.send_deliver(1, "ctag-1", tag, False, "ex", "orders.new", header, body)
    return (time.perf_counter() - start) / n * 1e6


def bench_pamqp_encode(body: bytes, n: int) -> float:
    props = commands.Basic.Properties(
        content_type="application/json", delivery_mode=2, headers={"trace": "abc", "n": 1}
    )
    start = time.perf_counter()
    for tag in range(1, n + 1):
        b"".join(
            (
                pframe.marshal(commands.Basic.Deliver("ctag-1", tag, False, "ex", "orders.new"), 1),
                pframe.marshal(pheader.ContentHeader(0, len(body), props), 1),
                pframe.marshal(pbody.ContentBody(body), 1),
            )
        )
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--body", type=int, default=256, help="body size in bytes")
    args = parser.parse_args()
    n, body = args.messages, b"x" * args.body
    message = message_frames(body)
    stream = message * n

    def best(fn, *fn_args) -> float:
        return min(fn(*fn_args) for _ in range(3))

    decode = (best(bench_ours_decode, stream, n), best(bench_pamqp_decode, message, n))
    encode = (best(bench_ours_encode, stream, n), best(bench_pamqp_encode, body, n))
    rows = [("publish decode", *decode), ("deliver encode", *encode)]
    print(f"{n} messages, {args.body}-byte bodies; µs per message (best of 3 runs)")
    print(f"{'operation':<16}{'dari':>10}{'pamqp':>10}{'speed-up':>10}")
    for name, ours, theirs in rows:
        print(f"{name:<16}{ours:>10.2f}{theirs:>10.2f}{theirs / ours:>9.1f}x")


if __name__ == "__main__":
    main()
