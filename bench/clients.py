"""Benchmark client workers, run as `python -m bench.clients '<json spec>'` in their own process.

Running the client outside the harness keeps harness work (psutil sampling, bookkeeping) off the
client's interpreter. A worker prints `START` when its timed section begins, optionally `READY`,
and finally `RESULT <json>`; everything else (librdkafka logs) goes to stderr.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

_STALL_S = 30.0
_STAMP = struct.Struct(">qq")  # sequence number, send time in ns since the epoch


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Errors:
    """Counts failures reported by librdkafka callbacks and keeps a few samples."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def __call__(self, err: Any, msg: Any = None) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(str(err))


def _producer(spec: dict[str, Any], failed: _Errors, errors: _Errors) -> Producer:
    conf = {
        "bootstrap.servers": spec["bootstrap"],
        "acks": spec["acks"],
        "linger.ms": spec.get("linger_ms", 5),
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "delivery.report.only.error": True,
        "on_delivery": failed,
        "error_cb": errors,
    }
    return Producer(conf)


def _consumer(spec: dict[str, Any], errors: _Errors) -> Consumer:
    conf = {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": "dari-bench",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.max.messages.kbytes": 262_144,
        # A broker may answer with more than max.partition.fetch.bytes; librdkafka then finds its
        # queue "full" and by default pauses fetching for a whole second (fetch.queue.backoff.ms).
        "queued.min.messages": 1_000_000,
        "fetch.queue.backoff.ms": 10,
        "error_cb": errors,
    }
    if "fetch_wait_max_ms" in spec:
        conf["fetch.wait.max.ms"] = spec["fetch_wait_max_ms"]
    return Consumer(conf)


def _partitions(client: Producer | Consumer, topic: str) -> list[int]:
    md = client.list_topics(topic, timeout=30)
    return sorted(md.topics[topic].partitions)


def _connect_leaders(c: Consumer, topic: str, parts: list[int]) -> None:
    """Open the partition leaders' connections before timing: otherwise librdkafka's first
    offset lookup after assign() waits ~0.5 s for the leader to come up, on any broker."""
    for p in parts:
        c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)


def produce(spec: dict[str, Any]) -> dict[str, Any]:
    """Tight produce loop of `count` records of `size` bytes, then flush; the timed section
    starts after metadata is known so it measures the transfer, not the connection set-up."""
    failed, errors = _Errors(), _Errors()
    p = _producer(spec, failed, errors)
    topic, count = spec["topic"], spec["count"]
    value = b"x" * spec["size"]
    _partitions(p, topic)
    send, poll = p.produce, p.poll
    _say("START")
    t0 = time.perf_counter()
    for i in range(count):
        try:
            send(topic, value)
        except BufferError:
            poll(0.05)
            send(topic, value)
        if not i & 0x3FFF:
            poll(0)
    undelivered = p.flush(spec.get("timeout", 600))
    elapsed = time.perf_counter() - t0
    return {"count": count - failed.count - undelivered, "expected": count, "elapsed_s": elapsed,
            "failed": failed.count, "undelivered": undelivered,
            "error_samples": failed.samples + errors.samples}


def consume(spec: dict[str, Any]) -> dict[str, Any]:
    """Read `count` records from offset 0 of every partition with assign() (no group join)."""
    errors = _Errors()
    c = _consumer(spec, errors)
    topic, count = spec["topic"], spec["count"]
    parts = _partitions(c, topic)
    _connect_leaders(c, topic, parts)
    _say("START")
    t0 = time.perf_counter()
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    got = nbytes = 0
    last = time.perf_counter()
    while got < count:
        # consume() waits for the full batch or the timeout: never ask for more than is left.
        batch = c.consume(min(10_000, count - got), 1.0)
        now = time.perf_counter()
        if not batch:
            if now - last > _STALL_S:
                break
            continue
        last = now
        for m in batch:
            if m.error():
                errors(m.error())
                got -= 1
        got += len(batch)
        nbytes += len(batch[-1]) * len(batch)
    elapsed = last - t0
    c.close()
    return {"count": got, "expected": count, "elapsed_s": elapsed, "bytes": nbytes,
            "error_samples": errors.samples}


def latency_produce(spec: dict[str, Any]) -> dict[str, Any]:
    """Send `rate` records/s for warmup + duration seconds, each stamped with time.time_ns()."""
    failed, errors = _Errors(), _Errors()
    p = _producer(spec, failed, errors)
    topic, rate = spec["topic"], spec["rate"]
    total = int(rate * (spec["warmup_s"] + spec["duration_s"]))
    pad = b"x" * max(0, spec["size"] - _STAMP.size)
    pack, now_ns, send, poll = _STAMP.pack, time.time_ns, p.produce, p.poll
    _partitions(p, topic)
    _say("START")
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            send(topic, pack(sent, now_ns()) + pad, partition=0)
            sent += 1
        poll(0)
        time.sleep(0.0002)
    undelivered = p.flush(30)
    elapsed = time.perf_counter() - t0
    return {"count": total, "elapsed_s": elapsed, "achieved_rate": total / elapsed,
            "failed": failed.count, "undelivered": undelivered,
            "error_samples": failed.samples + errors.samples}


def _percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def latency_consume(spec: dict[str, Any]) -> dict[str, Any]:
    """Receive the stamped records and report receive - send (ms), skipping the warm-up."""
    errors = _Errors()
    c = _consumer(spec, errors)
    topic, rate = spec["topic"], spec["rate"]
    skip = int(rate * spec["warmup_s"])
    total = skip + int(rate * spec["duration_s"])
    _connect_leaders(c, topic, [0])
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    c.consume(1, 0.2)
    _say("READY")
    unpack, now_ns = _STAMP.unpack_from, time.time_ns
    lat: list[int] = []
    seen = 0
    last_seq = -1
    last = time.perf_counter()
    deadline = last + spec["warmup_s"] + spec["duration_s"] + 120
    while last_seq < total - 1:
        # poll() returns on the first record; consume(n, 0) then drains what is already queued
        # (a blocking consume(n, t) would hold records back until n arrive or t expires).
        first = c.poll(0.1)
        received = now_ns()
        batch = [first, *c.consume(1000, 0)] if first is not None else []
        mono = time.perf_counter()
        if mono > deadline or (seen and not batch and mono - last > 10):
            break
        if not batch:
            continue
        last = mono
        for m in batch:
            if m.error():
                errors(m.error())
                continue
            seq, sent = unpack(m.value())
            seen += 1
            last_seq = max(last_seq, seq)
            if seq >= skip:
                lat.append(received - sent)
    c.close()
    lat.sort()
    return {"count": seen, "expected": total, "measured": len(lat),
            "p50_ms": _percentile(lat, 0.50), "p99_ms": _percentile(lat, 0.99),
            "p999_ms": _percentile(lat, 0.999), "max_ms": lat[-1] / 1e6 if lat else float("nan"),
            "mean_ms": sum(lat) / len(lat) / 1e6 if lat else float("nan"),
            "error_samples": errors.samples}


_MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "produce": produce,
    "consume": consume,
    "latency_produce": latency_produce,
    "latency_consume": latency_consume,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        result = _MODES[spec["mode"]](spec)
    except KafkaException as exc:
        result = {"fatal": str(exc)}
    _say("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
