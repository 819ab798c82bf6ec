"""Per-message CPU cost of dari's whole AMQP server path, without sockets.

``python -m bench.amqp_path_bench [--messages 300000] [--batch 400] [--prefetch 1000]
[--no-ack] [--persistent] [--confirm] [--profile]``

Two ``AMQPServerConnection`` objects (a publisher and a consumer) run on in-memory transports
inside one event loop: each "read" hands the publisher connection ``--batch`` pre-encoded
publish + header + body triples (a typical 64 KiB socket read of 100 B messages), the consumer
connection answers every batch of deliveries it was written with one ``basic.ack
multiple=true``, as the socket load generator of ``bench.amqp_bench`` does (``--confirm``: the
publisher's channel is in confirm mode, one ``ack multiple`` per read). What is left is
exactly the broker's own work per message: framing, publish decode, routing, enqueue,
dispatch, deliver encode and ack handling. It complements ``bench.amqp_bench`` (which measures
against RabbitMQ over TCP) by being quiet enough to compare two commits of the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from pamqp import commands
from pamqp import frame as pframe

from bench.amqp_loadgen import message_frames
from dari.queues.broker import AMQPBroker, User
from dari.server.amqp import AMQPServerConnection
from dari.storage import FlushScheduler, LogConfig

_FRAME_HEAD = struct.Struct(">BHI")
_DELIVER = 60 << 16 | 60


class MemoryTransport(asyncio.Transport):
    """Collects what the server writes; counts deliveries and remembers the last tag."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.chunks.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.chunks.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _deliveries(data: bytes) -> tuple[int, int]:
    """(deliveries, last delivery tag) in server output."""
    count = last = pos = 0
    end = len(data)
    while pos + 7 <= end:
        ftype, _channel, size = _FRAME_HEAD.unpack_from(data, pos)
        if ftype == 1 and struct.unpack_from(">I", data, pos + 7)[0] == _DELIVER:
            count += 1
            tag_at = pos + 11 + 1 + data[pos + 11]
            last = struct.unpack_from(">Q", data, tag_at)[0]
        pos += 8 + size
    return count, last


def _handshake(server: AMQPServerConnection, transport: MemoryTransport) -> None:
    server.connection_made(transport)
    server.data_received(b"AMQP\x00\x00\x09\x01")
    for method in (
        commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
        ),
        commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0),
        commands.Connection.Open(virtual_host="/"),
    ):
        server.data_received(pframe.marshal(method, 0))
    server.data_received(pframe.marshal(commands.Channel.Open(), 1))


async def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        flusher = FlushScheduler()
        broker = AMQPBroker(
            Path(tmp), flusher, LogConfig(), {"guest": User("guest", "guest", True, ("*",))}
        )
        broker.load()
        settings = {"frame_max": 131072, "channel_max": 2047, "heartbeat": 0}
        connections: set[Any] = set()
        pub, sub = (AMQPServerConnection(broker, settings, connections) for _ in range(2))
        pub_t, sub_t = MemoryTransport(), MemoryTransport()
        _handshake(pub, pub_t)
        _handshake(sub, sub_t)
        queue = "bench"
        sub.data_received(b"".join(pframe.marshal(m, 1) for m in (
            commands.Queue.Declare(queue=queue, durable=args.persistent),
            commands.Basic.Qos(prefetch_count=args.prefetch),
            commands.Basic.Consume(queue=queue, no_ack=args.no_ack),
        )))
        if args.confirm:
            pub.data_received(pframe.marshal(commands.Confirm.Select(), 1))
        await asyncio.sleep(0)
        pub_t.take()
        sub_t.take()
        chunk = message_frames(queue, b"x" * args.size, args.persistent) * args.batch
        reads = args.messages // args.batch
        received = 0
        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        for _ in range(reads):
            pub.data_received(chunk)
            await asyncio.sleep(0)  # the end-of-turn flush
            pub_t.chunks.clear()  # publisher confirms, if any
            out = sub_t.take()
            count, last = _deliveries(out)
            received += count
            if count and not args.no_ack:
                ack = pframe.marshal(commands.Basic.Ack(delivery_tag=last, multiple=True), 1)
                sub.data_received(ack)
        while received < reads * args.batch:
            await asyncio.sleep(0)
            out = sub_t.take()
            count, last = _deliveries(out)
            if not count:
                break
            received += count
            if not args.no_ack:
                sub.data_received(
                    pframe.marshal(commands.Basic.Ack(delivery_tag=last, multiple=True), 1)
                )
        elapsed = time.perf_counter() - start
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        pub.close()
        sub.close()
        await flusher.aclose()
        broker.close()
        total = reads * args.batch
        if received != total:
            raise SystemExit(f"delivered {received} of {total}")
        return {"messages": total, "seconds": elapsed, "us_per_msg": elapsed / total * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--no-ack", action="store_true")
    parser.add_argument("--persistent", action="store_true")
    parser.add_argument("--confirm", action="store_true", help="publish in confirm mode")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(run(args))
    print(
        f"{result['messages']:,} messages in {result['seconds']:.2f} s: "
        f"{result['us_per_msg']:.2f} µs per message "
        f"({result['messages'] / result['seconds']:,.0f} msg/s on one core)"
    )


if __name__ == "__main__":
    main()
