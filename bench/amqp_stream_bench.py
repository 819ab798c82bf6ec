"""The `stream` group of the AMQP benchmark: stream queues (`x-queue-type=stream`).

For each body size, one fresh stream queue, declared by the publisher:
  publish   `count` messages with publisher confirms (window as in the persistent rows):
            msg/s and MB/s of bodies over START -> last confirm
  fetch     dari only: the same data read by a confluent-kafka consumer from offset 0 of the
            queue's topic (a stream queue is a one-partition topic), the median of three
            reads (msg/s, MB/s of values); RabbitMQ has no Kafka side
  consume   N AMQP consumers (each its own connection and process) that each read the whole
            stream from `x-stream-offset=first` with a prefetch and multiple-acks; they declare
            and set qos first, then are released together: aggregate msg/s over go -> the last
            consumer's last delivery
The queue is deleted at the end. Broker CPU is that of the broker process tree over each timed
window, as in the other groups.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.amqp_brokers import kafka_bootstrap
from bench.amqp_clients import LoadClient, run_deadline
from bench.brokers import Broker
from bench.kafka_bench import Client, ClientFailed, _describe, _Timer
from bench.report import Entry, Results

GROUP = "stream"
STREAM_ARGS = {"x-queue-type": "stream"}
FETCH_RUNS = 3


@dataclass(frozen=True)
class StreamSettings:
    count: int
    sizes: tuple[int, ...]
    consumers: tuple[int, ...]
    prefetch: int
    window: int


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


class StreamBench:
    """Runs the stream rows against one broker and adds them to `results`; harness thread."""

    def __init__(self, s: StreamSettings, results: Results, workdir: Path) -> None:
        self.s = s
        self.results = results
        self.workdir = workdir

    def run(self, broker: Broker) -> None:
        for size in self.s.sizes:
            queue = f"stream-{uuid.uuid4().hex[:8]}"
            base = {"host": broker.host, "port": broker.port, "queue": queue}
            self.publish(broker, base, size)
            bootstrap = kafka_bootstrap(broker)
            if bootstrap is not None:
                self.fetch(broker, bootstrap, queue, size)
            for n in self.s.consumers:
                self.consume(broker, base, size, n)
            self._delete(base)

    def _add(self, broker: Broker, scenario: str, metric: str, unit: str, value: float | None,
             cpu: float | None, error: str | None, detail: dict[str, Any]) -> None:
        self.results.add(broker.name, Entry(GROUP, scenario, metric, unit, "higher", value, cpu,
                                            error, detail))

    def publish(self, broker: Broker, base: dict[str, Any], size: int) -> None:
        s = self.s
        scenario = f"stream publish + confirms {_size(size)} (window {s.window})"
        spec = {**base, "mode": "publish", "count": s.count, "size": size, "persistent": True,
                "confirm": True, "window": s.window, "declare": True, "durable": True,
                "arguments": STREAM_ARGS}
        value = mbps = cpu = None
        detail: dict[str, Any] = {"count": s.count, "size": size}
        try:
            pub = LoadClient(spec, self.workdir)
            try:
                pub.expect("START", run_deadline(s.count))
                timer = _Timer(broker)
                timer.start()
                pres = pub.result(run_deadline(s.count))
            finally:
                pub.close()
            window = timer.stop()
            detail["publisher"] = pres
            error = None
            if pres["confirmed"] != s.count or pres["nacked"]:
                error = f"confirmed {pres['confirmed']}, nacked {pres['nacked']} of {s.count}"
            else:
                value, cpu = pres["publish_rate"], window.cpu_pct
                mbps = value * size / 1e6
                print(f"    {scenario}: {value:,.0f} msg/s ({mbps:.1f} MB/s), broker CPU "
                      f"{cpu:.0f}%, publisher at {pres['cpu_pct']:.0f}% CPU", flush=True)
        except Exception as exc:  # one failed row must not stop the run
            error = _describe(exc)
        self._add(broker, scenario, "msg/s", "msg/s", value, cpu, error, detail)
        self._add(broker, scenario, "MB/s", "MB/s", mbps, cpu, error, detail)

    def fetch(self, broker: Broker, bootstrap: str, topic: str, size: int) -> None:
        """The median of `FETCH_RUNS` reads: one takes a fraction of a second, too short a
        window to trust alone on a shared machine."""
        s = self.s
        scenario = f"Kafka fetch of the stream {_size(size)} (confluent-kafka, from 0)"
        spec = {"mode": "consume", "bootstrap": bootstrap, "topic": topic, "count": s.count}
        value = mbps = cpu = None
        detail: dict[str, Any] = {"count": s.count, "size": size, "runs": []}
        error = None
        try:
            runs = []
            for _ in range(FETCH_RUNS):
                client = Client(spec, self.workdir)
                try:
                    client.expect("START", run_deadline(s.count))
                    timer = _Timer(broker)
                    timer.start()
                    res = client.result(run_deadline(s.count))
                finally:
                    client.close()
                window = timer.stop()
                detail["runs"].append(res)
                if res["count"] != s.count:
                    error = f"fetched {res['count']} of {s.count}"
                    break
                if res["elapsed_s"] <= 0:
                    error = "no time measured"
                    break
                runs.append((s.count / res["elapsed_s"], res["bytes"] / res["elapsed_s"] / 1e6,
                             window.cpu_pct))
            if error is None:
                value, mbps, cpu = sorted(runs)[len(runs) // 2]
                print(f"    {scenario}: {value:,.0f} msg/s ({mbps:.1f} MB/s), broker CPU "
                      f"{cpu:.0f}% (median of {len(runs)})", flush=True)
        except Exception as exc:
            error = _describe(exc)
        self._add(broker, scenario, "msg/s", "msg/s", value, cpu, error, detail)
        self._add(broker, scenario, "MB/s", "MB/s", mbps, cpu, error, detail)

    def consume(self, broker: Broker, base: dict[str, Any], size: int, n: int) -> None:
        s = self.s
        scenario = (f"stream consume {_size(size)}, {n}C from first, prefetch {s.prefetch}"
                    " + multi-ack")
        spec = {**base, "mode": "consume", "count": s.count, "durable": True,
                "arguments": STREAM_ARGS, "prefetch": s.prefetch, "go": True, "delete": False,
                "consume_arguments": {"x-stream-offset": "first"}}
        value = cpu = None
        detail: dict[str, Any] = {"count": s.count, "size": size, "consumers": n}
        clients: list[LoadClient] = []
        try:
            deadline = run_deadline(s.count * n)
            for _ in range(n):
                clients.append(LoadClient(spec, self.workdir))
            for c in clients:
                c.expect("READY", deadline)
            timer = _Timer(broker)
            timer.start()
            go_ns = time.time_ns()
            for c in clients:
                c.go()
            results = [c.result(deadline) for c in clients]
            window = timer.stop()
            detail["consumers_detail"] = results
            short = [r["count"] for r in results if r["count"] != s.count]
            seconds = (max(r["last_ns"] for r in results) - go_ns) / 1e9
            detail["seconds"] = seconds
            if short:
                error = f"consumers got {short} of {s.count}"
            elif any(r["redelivered"] for r in results):
                error = "redelivered messages"
            elif seconds <= 0:
                error = "no time measured"
            else:
                error = None
                value, cpu = n * s.count / seconds, window.cpu_pct
                cpus = ", ".join(f"{r['cpu_pct']:.0f}%" for r in results)
                print(f"    {scenario}: {value:,.0f} msg/s, broker CPU {cpu:.0f}%, "
                      f"consumers at {cpus} CPU", flush=True)
        except Exception as exc:
            error = _describe(exc)
        finally:
            for c in clients:
                c.close()
        self._add(broker, scenario, "msg/s", "msg/s", value, cpu, error, detail)

    def _delete(self, base: dict[str, Any]) -> None:
        try:
            LoadClient({**base, "mode": "delete"}, self.workdir).result(run_deadline(0))
        except ClientFailed as exc:
            print(f"    deleting {base['queue']} failed: {exc}", flush=True)
