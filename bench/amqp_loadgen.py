"""A lean AMQP 0-9-1 load generator: `python -m bench.amqp_loadgen '<json spec>'`.

Python AMQP libraries spend tens of microseconds per message, so against a broker that does
~100k msg/s they, not the broker, would be measured. This client is a plain `asyncio.Protocol`
on uvloop: publishes go out as pre-encoded publish+header+body frame triples, many per write;
incoming bytes are walked frame by frame with `struct.unpack_from`, and only the per-message
methods (deliver, ack, nack) are handled inline. Rare methods (handshake, declare, consume,
close) go through pamqp. It is an ordinary client: it must work unchanged against RabbitMQ.

Modes (``spec["mode"]``), speaking the START / READY / RESULT stdout protocol of `bench.clients`:
  publish   ``count`` messages of ``size`` bytes to the default exchange, routing key ``queue``;
            ``persistent`` sets delivery_mode 2; ``confirm`` enables publisher confirms with at
            most ``window`` unconfirmed messages; ``rate`` > 0 paces the sends and stamps each
            body with its sequence number and send time (for latency). With ``declare`` it
            first declares ``queue`` (``durable``, ``arguments``).
  consume   declare ``queue`` (``durable``, ``arguments``: e.g. ``x-queue-type=stream``), then
            consume ``count`` messages with ``prefetch`` and multiple-acks (or ``no_ack``),
            with ``consume_arguments`` (e.g. ``x-stream-offset=first``); with ``latency`` it
            reads the stamp of every body and reports percentiles, skipping the first
            ``warmup`` messages. With ``go`` it waits for a line on stdin after READY before
            it consumes (so several consumers start together). Deletes the queue unless
            ``delete`` is false (a stream that other consumers still read).
  delete    delete ``queue`` and report its message count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
import time
from typing import Any, cast

from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp.base import Frame as PFrame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"
_FRAME_HEAD = struct.Struct(">BHI")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ACK_ARGS = struct.Struct(">QB")
_STAMP = struct.Struct(">qq")  # sequence number, send time (ns since the epoch)
_BODY_HEAD = struct.Struct(">BHI")
DELIVER = 60 << 16 | 60
ACK = 60 << 16 | 80
NACK = 60 << 16 | 120
CHANNEL = 1
_CHUNK = 200  # messages per transport.write in bulk publishing
_STALL_S = 30.0


class BrokerClosed(RuntimeError):
    """The broker closed the channel or connection (the reply text says why)."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def message_frames(queue: str, body: bytes, persistent: bool) -> bytes:
    """One publish + content header + body, encoded once and reused for every send."""
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
    return b"".join((
        pframe.marshal(commands.Basic.Publish(exchange="", routing_key=queue), CHANNEL),
        pframe.marshal(pheader.ContentHeader(0, len(body), props), CHANNEL),
        pframe.marshal(pbody.ContentBody(body), CHANNEL),
    ))


def publish_prefix(queue: str, size: int, persistent: bool) -> bytes:
    """Publish + header frames for a body of `size` bytes; the body frame is added per message."""
    return message_frames(queue, b"\0" * size, persistent)[: -(size + 8)]


def body_frame(body: bytes) -> bytes:
    return _BODY_HEAD.pack(3, CHANNEL, len(body)) + body + FRAME_END


class Connection(asyncio.Protocol):
    """One AMQP connection with channel 1 open; subclasses handle the per-message frames."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.replies: asyncio.Queue[PFrame] = asyncio.Queue()
        self.error: BaseException | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.frame_max = 131072
        self.blocked = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=1 << 20, low=1 << 18)
        self.transport.write(PROTOCOL_HEADER)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and exc is not None:
            self.error = exc
        if not self.closed.done():
            self.closed.set_result(None)
        self.writable.set()
        self.wake()
        self.replies.put_nowait(commands.Connection.CloseOk())

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        unpack_head = _FRAME_HEAD.unpack_from
        fast = self.on_method
        while n - pos >= 8:
            ftype, _ch, size = unpack_head(buf, pos)
            end = pos + size + 8
            if end > n:
                break
            if ftype == 1:
                if not fast(buf, pos + 7, _U32.unpack_from(buf, pos + 7)[0]):
                    self._slow(bytes(buf[pos:end]))
            elif ftype == 3:
                self.on_body(buf, pos + 7, size)
            elif ftype == 2 or ftype == 8:
                pass
            else:
                self._fail(BrokerClosed(f"unexpected frame type {ftype}"))
            pos = end
        if pos:
            del buf[:pos]
        self.after_batch()

    # -- hooks --------------------------------------------------------------------------------

    def on_method(self, buf: bytearray, at: int, index: int) -> bool:
        """Handle a per-message method inline; False sends it to the slow (pamqp) path."""
        return False

    def on_body(self, buf: bytearray, at: int, size: int) -> None:
        pass

    def after_batch(self) -> None:
        pass

    def wake(self) -> None:
        pass

    # -- slow path ----------------------------------------------------------------------------

    def _slow(self, raw: bytes) -> None:
        _n, channel, frame = pframe.unmarshal(raw)
        if isinstance(frame, commands.Connection.Close | commands.Channel.Close):
            text = f"{frame.name}: {frame.reply_code} {frame.reply_text}"
            reply = (commands.Connection.CloseOk() if channel == 0
                     else commands.Channel.CloseOk())
            self.send(reply, channel)
            self._fail(BrokerClosed(text))
        elif isinstance(frame, commands.Connection.Blocked):
            self.blocked = True
        elif isinstance(frame, commands.Connection.Unblocked):
            self.blocked = False
        else:
            self.replies.put_nowait(frame)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.writable.set()
        self.wake()
        self.replies.put_nowait(commands.Connection.CloseOk())

    def send(self, method: PFrame, channel: int = CHANNEL) -> None:
        assert self.transport is not None
        self.transport.write(pframe.marshal(method, channel))

    async def call(self, method: PFrame | None, expect: type, channel: int = CHANNEL) -> Any:
        """Send `method` (if any) and wait for a reply of type `expect`."""
        if method is not None:
            self.send(method, channel)
        while True:
            if self.error is not None:
                raise self.error
            frame = await asyncio.wait_for(self.replies.get(), _STALL_S)
            if self.error is not None:
                raise self.error
            if isinstance(frame, expect):
                return frame

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.call(None, commands.Connection.Start, 0)
        self.send(commands.Connection.StartOk(
            client_properties={"product": "dari-bench", "capabilities": {
                "publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True,
                "connection.blocked": True}},
            mechanism="PLAIN", response="\0guest\0guest", locale="en_US"), 0)
        tune = await self.call(None, commands.Connection.Tune, 0)
        self.frame_max = tune.frame_max or self.frame_max
        self.send(commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0), 0)
        await self.call(commands.Connection.Open("/"), commands.Connection.OpenOk, 0)
        await self.call(commands.Channel.Open(), commands.Channel.OpenOk)

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.error is None:
            with contextlib.suppress(BrokerClosed, OSError, TimeoutError):
                await self.call(commands.Connection.Close(200, "bye", 0, 0),
                                commands.Connection.CloseOk, 0)
        self.transport.close()


async def connect(factory: Any, host: str, port: int) -> Any:
    loop = asyncio.get_running_loop()
    _t, conn = await loop.create_connection(factory, host, port)
    await conn.open()
    return conn


# -- publisher --------------------------------------------------------------------------------


class Publisher(Connection):
    """Tracks publisher confirms as a contiguous 'acked up to' tag plus out-of-order singles."""

    def __init__(self) -> None:
        super().__init__()
        self.acked_upto = 0
        self.singles: set[int] = set()
        self.nacked = 0
        self.progress = asyncio.Event()
        self.sent_ns: list[int] | None = None
        self.confirm_ns: list[int] = []
        self.confirm_warmup = 0

    def on_method(self, buf: bytearray, at: int, index: int) -> bool:
        if index in (ACK, NACK):
            tag, bits = _ACK_ARGS.unpack_from(buf, at + 4)
            if index == NACK:
                self.nacked += tag - self.acked_upto if bits & 1 else 1
            self._confirm(tag, bool(bits & 1))
            return True
        return False

    def _confirm(self, tag: int, multiple: bool) -> None:
        old = self.acked_upto
        if multiple or tag == old + 1:
            upto = max(old, tag)
            singles = self.singles
            if singles:
                singles.difference_update(range(old + 1, upto + 1))
                while upto + 1 in singles:
                    upto += 1
                    singles.discard(upto)
            self.acked_upto = upto
        else:
            self.singles.add(tag)
            upto = old
        sent = self.sent_ns
        if sent is not None and upto > old:
            now = time.time_ns()
            lat = self.confirm_ns
            for seq in range(max(old, self.confirm_warmup), upto):
                lat.append(now - sent[seq])

    def after_batch(self) -> None:
        self.progress.set()

    def wake(self) -> None:
        self.progress.set()

    def confirmed(self) -> int:
        return self.acked_upto + len(self.singles)

    async def wait_confirms(self, upto: int) -> None:
        """Until `upto` messages are confirmed; fails after _STALL_S without any progress."""
        while (before := self.confirmed()) < upto:
            self.check()
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), _STALL_S)
            except TimeoutError:
                if self.confirmed() == before:
                    msg = f"{before} of {upto} confirms, none for {_STALL_S} s"
                    raise TimeoutError(msg) from None


async def bulk_publish(conn: Publisher, spec: dict[str, Any]) -> None:
    """As fast as the socket and (with confirms) the window allow."""
    count, confirm, window = spec["count"], spec["confirm"], spec.get("window", 1000)
    one = message_frames(spec["queue"], b"x" * spec["size"], spec["persistent"])
    chunk = one * _CHUNK
    transport = conn.transport
    assert transport is not None
    sent = 0
    while sent < count:
        k = min(_CHUNK, count - sent)
        if confirm:
            while sent + k - conn.confirmed() > window:
                conn.check()
                conn.progress.clear()
                await asyncio.wait_for(conn.progress.wait(), _STALL_S)
        if not conn.writable.is_set():
            await conn.writable.wait()
        conn.check()
        transport.write(chunk if k == _CHUNK else one * k)
        sent += k
        if not confirm and sent % (_CHUNK * 32) == 0:
            await asyncio.sleep(0)  # let the loop read (a close, a blocked notice)


async def paced_publish(conn: Publisher, spec: dict[str, Any]) -> None:
    """`rate` msg/s, each body stamped with its sequence number and send time."""
    count, rate, size = spec["count"], spec["rate"], spec["size"]
    prefix = publish_prefix(spec["queue"], size, spec["persistent"])
    pad = b"x" * (size - _STAMP.size)
    head = _BODY_HEAD.pack(3, CHANNEL, size)
    transport = conn.transport
    assert transport is not None
    sent_ns = conn.sent_ns = [0] * count
    conn.confirm_warmup = spec.get("warmup", 0)
    t0 = time.perf_counter()
    sent = 0
    while sent < count:
        conn.check()
        elapsed = time.perf_counter() - t0
        due = min(count, int(elapsed * rate) + 1)
        if due > sent:
            parts = []
            for seq in range(sent, due):
                now = time.time_ns()
                sent_ns[seq] = now
                parts += (prefix, head, _STAMP.pack(seq, now), pad, FRAME_END)
            transport.write(b"".join(parts))
            sent = due
        else:
            await asyncio.sleep(sent / rate - elapsed)


async def publish(spec: dict[str, Any]) -> dict[str, Any]:
    conn: Publisher = await connect(Publisher, spec["host"], spec["port"])
    try:
        if spec["confirm"]:
            await conn.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
        if spec.get("declare"):
            await _declare(conn, spec)
        _say("START")
        t0, w0, c0 = time.perf_counter(), time.time_ns(), time.process_time()
        if spec.get("rate"):
            await paced_publish(conn, spec)
        else:
            await bulk_publish(conn, spec)
        written = time.perf_counter() - t0
        if spec["confirm"]:
            await conn.wait_confirms(spec["count"])
        # A synchronous round trip: every publish before it has reached the broker's channel.
        await conn.call(commands.Basic.Qos(prefetch_count=0), commands.Basic.QosOk)
        elapsed = time.perf_counter() - t0
        result: dict[str, Any] = {
            "published": spec["count"], "confirmed": conn.confirmed(), "nacked": conn.nacked,
            "start_ns": w0, "elapsed_s": elapsed, "written_s": written,
            "publish_rate": spec["count"] / elapsed if elapsed else None,
            "blocked_at_end": conn.blocked,
            "cpu_pct": 100 * (time.process_time() - c0) / elapsed if elapsed else None,
        }
        if conn.confirm_ns:
            result.update(_percentiles(conn.confirm_ns, "confirm_"))
        return result
    finally:
        await conn.close()


# -- consumer ---------------------------------------------------------------------------------


class Consumer(Connection):
    """Counts deliveries, acks them in bulk once per socket read, optionally reads stamps."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last_tag = 0
        self.acked_tag = 0
        self.redelivered = 0
        self.manual_ack = True
        self.latency = False
        self.warmup = 0
        self.lat_ns: list[int] = []
        self.seqs_seen = 0
        self.first_ns = self.last_ns = 0
        self.first_cpu = 0.0
        self.expected = 1 << 62  # set once the spec is known
        self.done = asyncio.get_running_loop().create_future()
        self.progress_at = time.perf_counter()

    def on_method(self, buf: bytearray, at: int, index: int) -> bool:
        if index != DELIVER:
            return False
        ctag = at + 4
        tag_at = ctag + 1 + buf[ctag]
        self.last_tag = _U64.unpack_from(buf, tag_at)[0]
        if buf[tag_at + 8]:
            self.redelivered += 1
        self.count += 1
        return True

    def on_body(self, buf: bytearray, at: int, size: int) -> None:
        if self.latency:
            seq, stamp = _STAMP.unpack_from(buf, at)
            if seq >= self.warmup:
                self.lat_ns.append(time.time_ns() - stamp)

    def after_batch(self) -> None:
        if self.count:
            now = time.time_ns()
            if not self.first_ns:
                self.first_ns, self.first_cpu = now, time.process_time()
            self.last_ns = now
            self.progress_at = time.perf_counter()
        if self.manual_ack and self.last_tag > self.acked_tag and self.transport is not None:
            self.transport.write(_ack_frame(self.last_tag))
            self.acked_tag = self.last_tag
        if self.count >= self.expected and not self.done.done():
            self.done.set_result(None)

    def wake(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _ack_frame(tag: int) -> bytes:
    payload = struct.pack(">HHQB", 60, 80, tag, 1)
    return _FRAME_HEAD.pack(1, CHANNEL, len(payload)) + payload + FRAME_END


async def consume(spec: dict[str, Any]) -> dict[str, Any]:
    conn: Consumer = await connect(Consumer, spec["host"], spec["port"])
    queue = spec["queue"]
    try:
        conn.manual_ack = not spec.get("no_ack", False)
        conn.latency = bool(spec.get("latency"))
        conn.warmup = spec.get("warmup", 0)
        conn.expected = spec["count"]
        await _declare(conn, spec)
        if conn.manual_ack:
            await conn.call(commands.Basic.Qos(prefetch_count=spec.get("prefetch", 1000)),
                            commands.Basic.QosOk)
        go_ns = 0
        if spec.get("go"):
            _say("READY")
            sys.stdin.readline()  # the connection is idle (no heartbeats): blocking is fine
            go_ns = time.time_ns()
        await conn.call(commands.Basic.Consume(queue=queue, consumer_tag="bench",
                                               no_ack=not conn.manual_ack,
                                               arguments=spec.get("consume_arguments") or {}),
                        commands.Basic.ConsumeOk)
        if not spec.get("go"):
            _say("READY")
        while not conn.done.done():
            try:
                await asyncio.wait_for(asyncio.shield(conn.done), 1.0)
            except TimeoutError:
                if time.perf_counter() - conn.progress_at > _STALL_S:
                    break
        conn.check()
        busy = (conn.last_ns - conn.first_ns) / 1e9
        cpu_pct = 100 * (time.process_time() - conn.first_cpu) / busy if busy > 0 else None
        await conn.call(commands.Basic.Cancel("bench"), commands.Basic.CancelOk)
        # Let any in-flight deliveries arrive, so extra (duplicate) messages are counted.
        await asyncio.sleep(0.05)
        result: dict[str, Any] = {
            "count": conn.count, "expected": conn.expected, "redelivered": conn.redelivered,
            "first_ns": conn.first_ns, "last_ns": conn.last_ns, "cpu_pct": cpu_pct,
            "go_ns": go_ns,
        }
        if conn.latency:
            result.update(_percentiles(conn.lat_ns, ""))
        if spec.get("delete", True):
            declared = await conn.call(commands.Queue.Delete(queue=queue),
                                       commands.Queue.DeleteOk)
            result["left_in_queue"] = declared.message_count
        return result
    finally:
        await conn.close()


async def _declare(conn: Connection, spec: dict[str, Any]) -> None:
    await conn.call(commands.Queue.Declare(queue=spec["queue"], durable=spec["durable"],
                                           arguments=spec.get("arguments") or {}),
                    commands.Queue.DeclareOk)


async def delete(spec: dict[str, Any]) -> dict[str, Any]:
    conn: Connection = await connect(Connection, spec["host"], spec["port"])
    try:
        deleted = await conn.call(commands.Queue.Delete(queue=spec["queue"]),
                                  commands.Queue.DeleteOk)
        return {"message_count": deleted.message_count}
    finally:
        await conn.close()


def _percentiles(values_ns: list[int], prefix: str) -> dict[str, Any]:
    if not values_ns:
        return {f"{prefix}samples": 0}
    ordered = sorted(values_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {f"{prefix}samples": len(ordered), f"{prefix}p50_ms": pick(0.50),
            f"{prefix}p99_ms": pick(0.99), f"{prefix}p999_ms": pick(0.999),
            f"{prefix}max_ms": ordered[-1] / 1e6}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    runner = {"publish": publish, "consume": consume, "delete": delete}[spec["mode"]]
    try:
        import uvloop

        result = uvloop.run(runner(spec))
    except Exception as exc:  # reported to the harness, which fails the row
        result = {"fatal": f"{type(exc).__name__}: {exc}"[:400]}
    _say("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
