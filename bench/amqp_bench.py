"""AMQP 0-9-1 benchmark: dari against RabbitMQ, driven by `bench.amqp_loadgen`.

`python -m bench.amqp_bench [--quick] [--only startup,transient,persistent,latency,stream]
[--brokers dari,dari-fsync,rabbitmq] [--base-src TREE/src] [--keep]` (or `python -m bench
--only amqp`, or `--only stream` for the stream group alone).

Brokers: `dari` with its default flush policy (os: confirms once the message is in the page
cache, like Kafka's default), `dari-fsync` with log.flush.policy=always (confirms after a
group-committed fsync, like RabbitMQ's confirms for persistent messages; it runs only the
persistent scenarios) and a private `rabbitmq` node. `dari-base` (with `--base-src`) is dari
run from another tree's sources, e.g. a `git worktree` of the base commit, to show before/after
figures of a change in the same run.

For each broker in turn: start it (start-up time, idle RSS), then run the selected groups with
one publisher and one consumer process on a fresh queue, default exchange, 100 B bodies:
  transient   delivery_mode 1, no confirms, non-durable queue; consumer with prefetch 1000 and
              one multiple-ack per socket read, then again with a no-ack consumer
  persistent  delivery_mode 2, publisher confirms (at most 1000 unconfirmed), durable queue,
              consumer with prefetch 1000 and multiple-acks
  latency     publish -> deliver p50/p99 at a fixed 5,000 msg/s for both of the above (the body
              carries the send time); with confirms also publish -> confirm
  startup     spawn -> ready, spawn -> first AMQP handshake, idle RSS
  stream      per body size (100 B, 1 KiB), on a fresh stream queue (x-queue-type=stream):
              publish with confirms (msg/s, MB/s); for dari the Kafka fetch of the same data
              (confluent-kafka from offset 0 of the queue's topic; RabbitMQ has no Kafka side);
              then 1 and 3 AMQP consumers that each read the whole stream
              (x-stream-offset=first, prefetch 1000, multiple-acks), started together:
              aggregate msg/s over go -> last consumer's last delivery
Throughput is messages / (consumer's last delivery - publisher's first send): every message
must be consumed and the queue left empty, or the row fails. Broker CPU % is psutil CPU time
of the broker process tree over the timed window (100 % = one core); the load generators' own
CPU is in the JSON detail so one can see they were not the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import amqp_brokers, procs
from bench.amqp_clients import LoadClient, run_deadline
from bench.amqp_report import render
from bench.amqp_stream_bench import StreamBench, StreamSettings
from bench.brokers import Broker, BrokerStartError
from bench.kafka_bench import RESULTS_DIR, ClientFailed, Window, _describe, _Timer
from bench.report import Entry, Results

GROUPS = ("startup", "transient", "persistent", "latency", "stream")
BROKERS = ("dari", "dari-fsync", "rabbitmq")
CHOOSABLE = (*BROKERS, "dari-base")  # dari-base: only with --base-src
# dari with log.flush.policy=always differs only where messages are persistent.
PERSISTENT_ONLY = {"dari-fsync"}


@dataclass(frozen=True)
class Settings:
    """Workload sizes; `quick` shrinks every count for smoke runs."""

    size: int = 100
    transient_count: int = 500_000
    persistent_count: int = 200_000
    prefetch: int = 1000
    confirm_window: int = 1000
    latency_rate: int = 5_000
    latency_duration_s: float = 10.0
    latency_warmup_s: float = 1.0
    idle_s: float = 1.0
    stream_count: int = 100_000
    stream_sizes: tuple[int, ...] = (100, 1024)
    stream_consumers: tuple[int, ...] = (1, 3)

    @classmethod
    def quick(cls) -> Settings:
        return cls(transient_count=50_000, persistent_count=20_000, latency_duration_s=3.0,
                   latency_warmup_s=0.5, stream_count=20_000)


def _pair(broker: Broker, workdir: Path, consumer: dict[str, Any], publisher: dict[str, Any],
          count: int) -> tuple[dict[str, Any], dict[str, Any], Window]:
    """Consumer first (it declares the queue), then the publisher; CPU from the first send
    to the consumer's report. The whole machine's busy % over that window goes into the
    consumer's result as `machine_cpu_pct` (other load on the box shows up there)."""
    if not broker.alive():
        raise ClientFailed(f"broker exited with code {broker.proc.returncode}")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    base = {"host": broker.host, "port": broker.port, "queue": queue, "count": count}
    deadline = run_deadline(count)
    cons = LoadClient({**base, "mode": "consume", **consumer}, workdir)
    try:
        cons.expect("READY", deadline)
        pub = LoadClient({**base, "mode": "publish", **publisher}, workdir)
        try:
            pub.expect("START", deadline)
            timer = _Timer(broker)
            timer.start()
            psutil.cpu_percent(None)
            pres = pub.result(deadline)
        finally:
            pub.close()
        cres = cons.result(deadline)
        window = timer.stop()
        cres["machine_cpu_pct"] = psutil.cpu_percent(None) * (os.cpu_count() or 1)
    finally:
        cons.close()
    return pres, cres, window


def _check(count: int, pres: dict[str, Any], cres: dict[str, Any], confirm: bool) -> str | None:
    """Every message published, confirmed (if asked), consumed exactly once; queue empty."""
    problems = []
    if cres["count"] != count:
        problems.append(f"consumed {cres['count']} of {count}")
    if confirm and (pres["confirmed"] != count or pres["nacked"]):
        problems.append(f"confirmed {pres['confirmed']}, nacked {pres['nacked']} of {count}")
    if cres.get("left_in_queue"):
        problems.append(f"{cres['left_in_queue']} left in the queue")
    if cres.get("redelivered"):
        problems.append(f"{cres['redelivered']} redelivered")
    return "; ".join(problems) or None


class AMQPBench:
    """Runs the selected groups against one broker at a time and collects `Entry` rows."""

    def __init__(self, settings: Settings, groups: set[str], workdir: Path,
                 base_src: Path | None = None) -> None:
        self.s = settings
        self.groups = groups
        self.workdir = workdir
        self.base_src = base_src
        self.results = Results()

    def _add(self, broker: str, entry: Entry) -> None:
        self.results.add(broker, entry)

    # -- groups -------------------------------------------------------------------------------

    def startup(self, broker: Broker) -> None:
        timer = _Timer(broker)
        timer.start()
        time.sleep(self.s.idle_s)
        idle = timer.stop()
        name = broker.name
        ready = "ready line" if name.startswith("dari") else "first AMQP handshake"
        self._add(name, Entry("startup", "start -> ready", "ms", "ms", "lower",
                              broker.ready_s * 1e3, None, None, {"ready_point": ready}))
        self._add(name, Entry("startup", "start -> first AMQP handshake", "ms", "ms", "lower",
                              broker.probe_s * 1e3))
        self._add(name, Entry("startup", "idle after start", "RSS", "MiB", "lower",
                              broker.rss_bytes() / 2**20, idle.cpu_pct))

    def throughput(self, broker: Broker, group: str, scenario: str, count: int,
                   persistent: bool, no_ack: bool = False) -> None:
        s = self.s
        consumer = {"durable": persistent, "prefetch": s.prefetch, "no_ack": no_ack}
        publisher = {"size": s.size, "persistent": persistent, "confirm": persistent,
                     "window": s.confirm_window}
        value = cpu = None
        detail: dict[str, Any] = {"count": count, "size": s.size}
        try:
            pres, cres, window = _pair(broker, self.workdir, consumer, publisher, count)
            error = _check(count, pres, cres, persistent)
            seconds = (cres["last_ns"] - pres["start_ns"]) / 1e9
            detail.update(seconds=seconds, publisher=pres, consumer=cres)
            if not error and seconds > 0:
                value, cpu = count / seconds, window.cpu_pct
                print(f"    {scenario}: {value:,.0f} msg/s, broker CPU {cpu:.0f}%, publisher "
                      f"{pres['publish_rate']:,.0f} msg/s at {pres['cpu_pct']:.0f}% CPU, "
                      f"consumer at {cres['cpu_pct']:.0f}% CPU; whole machine "
                      f"{cres['machine_cpu_pct']:.0f}% of {100 * (os.cpu_count() or 1)}%",
                      flush=True)
        except Exception as exc:  # one failed row must not stop the run
            error = _describe(exc)
        self._add(broker.name, Entry(group, scenario, "msg/s", "msg/s", "higher", value, cpu,
                                     error, detail))

    def transient(self, broker: Broker) -> None:
        count = self.s.transient_count
        self.throughput(broker, "transient", "1P/1C transient, prefetch 1000 + multi-ack",
                        count, persistent=False)
        self.throughput(broker, "transient", "1P/1C transient, no-ack consumer", count,
                        persistent=False, no_ack=True)

    def persistent(self, broker: Broker) -> None:
        self.throughput(broker, "persistent",
                        f"1P/1C persistent + confirms (window {self.s.confirm_window})",
                        self.s.persistent_count, persistent=True)

    def latency(self, broker: Broker) -> None:
        for persistent in (False, True):
            if persistent or broker.name not in PERSISTENT_ONLY:
                self.latency_one(broker, persistent)

    def latency_one(self, broker: Broker, persistent: bool) -> None:
        s = self.s
        kind = "persistent + confirms" if persistent else "transient"
        scenario = f"e2e latency {s.latency_rate:,} msg/s {kind}"
        warmup = int(s.latency_rate * s.latency_warmup_s)
        count = warmup + int(s.latency_rate * s.latency_duration_s)
        consumer = {"durable": persistent, "prefetch": s.prefetch, "latency": True,
                    "warmup": warmup}
        publisher = {"size": s.size, "persistent": persistent, "confirm": persistent,
                     "window": s.confirm_window, "rate": s.latency_rate, "warmup": warmup}
        cres: dict[str, Any] = {}
        pres: dict[str, Any] = {}
        window: Window | None = None
        try:
            pres, cres, window = _pair(broker, self.workdir, consumer, publisher, count)
            error = _check(count, pres, cres, persistent)
        except Exception as exc:
            error = _describe(exc)
        cpu = window.cpu_pct if window and not error else None
        detail = {"count": count, "warmup": warmup, "publisher": pres, "consumer": cres}
        rows = [("p50", cres.get("p50_ms")), ("p99", cres.get("p99_ms"))]
        if persistent:
            rows += [("confirm p50", pres.get("confirm_p50_ms")),
                     ("confirm p99", pres.get("confirm_p99_ms"))]
        for metric, value in rows:
            self._add(broker.name, Entry("latency", scenario, metric, "ms", "lower",
                                         None if error else value, cpu, error, detail))
        if not error:
            print(f"    {scenario}: p50 {cres['p50_ms']:.2f} ms, p99 {cres['p99_ms']:.2f} ms; "
                  f"whole machine {cres['machine_cpu_pct']:.0f}% CPU", flush=True)

    def stream(self, broker: Broker) -> None:
        s = self.s
        StreamBench(StreamSettings(s.stream_count, s.stream_sizes, s.stream_consumers,
                                   s.prefetch, s.confirm_window),
                    self.results, self.workdir).run(broker)

    # -- driver -------------------------------------------------------------------------------

    def run_broker(self, name: str) -> None:
        print(f"--- {name}: starting", flush=True)
        try:
            broker = amqp_brokers.start(name, self.workdir / name, self.base_src)
        except BrokerStartError as exc:
            print(f"--- {name}: failed to start: {exc}", flush=True)
            self._add(name, Entry("startup", "start -> ready", "ms", "ms", "lower", None, None,
                                  str(exc).splitlines()[0]))
            return
        try:
            print(f"--- {name}: ready in {broker.ready_s * 1e3:.0f} ms at "
                  f"{broker.host}:{broker.port}", flush=True)
            steps = {"startup": self.startup, "transient": self.transient,
                     "persistent": self.persistent, "latency": self.latency,
                     "stream": self.stream}
            for group, step in steps.items():
                if group not in self.groups:
                    continue
                if name in PERSISTENT_ONLY and group not in ("persistent", "latency"):
                    continue
                if not broker.alive():
                    print(f"--- {name}: broker died; skipping {group}\n{broker.log_tail()}")
                    continue
                t0 = time.perf_counter()
                try:
                    step(broker)
                except Exception as exc:  # report and go on with the next group
                    print(f"--- {name}: {group} crashed: {exc!r}", flush=True)
                print(f"--- {name}: {group} done in {time.perf_counter() - t0:.1f} s",
                      flush=True)
            idle = self.results.by_broker.get(name, {}).get("idle after start [RSS]")
            if idle is not None:
                idle.detail["rss_after_run_mib"] = broker.rss_bytes() / 2**20
        finally:
            t0 = time.perf_counter()
            broker.stop()
            print(f"--- {name}: stopped in {time.perf_counter() - t0:.1f} s", flush=True)


def _versions() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rabbitmq_server": amqp_brokers.rabbitmq_version(),
    }


def run(brokers_: list[str], groups: set[str], settings: Settings, keep: bool = False,
        base_src: Path | None = None) -> Path:
    """Run everything, print the tables, write the JSON and return its path; `base_src` is
    the `src` of the tree the `dari-base` broker runs."""
    procs.install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="dari-amqp-bench-"))
    started = time.time()
    load_before = os.getloadavg()
    try:
        bench = AMQPBench(settings, groups, workdir, base_src)
        # A broker none of the selected groups runs on is neither started nor shown.
        brokers_ = [b for b in brokers_
                    if b not in PERSISTENT_ONLY or groups & {"persistent", "latency"}]
        for name in brokers_:
            bench.run_broker(name)
        print()
        print(render(bench.results, brokers_))
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        path = RESULTS_DIR / f"amqp-{stamp}.json"
        doc = {
            "started": started, "duration_s": time.time() - started, "argv": sys.argv,
            "brokers": brokers_, "groups": sorted(groups),
            "settings": dataclasses.asdict(settings), "versions": _versions(),
            "base_src": str(base_src) if base_src else None,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "results": bench.results.to_json(),
        }
        path.write_text(json.dumps(doc, indent=2, default=str))
        print(f"\nsaved {path} (total {time.time() - started:.0f} s)")
        return path
    finally:
        procs.kill_all()
        if keep:
            print(f"kept work directory {workdir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)


def _csv(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items or any(x not in allowed for x in items):
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return items

    return parse


def default_brokers(chosen: list[str] | None, base_src: Path | None) -> list[str]:
    if chosen is not None:
        return chosen
    return ["dari-base", *BROKERS] if base_src is not None else list(BROKERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.amqp_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for smoke testing")
    parser.add_argument("--only", type=_csv(GROUPS), default=list(GROUPS),
                        help=f"comma-separated groups (default all: {','.join(GROUPS)})")
    parser.add_argument("--brokers", type=_csv(CHOOSABLE), default=None,
                        help="comma-separated brokers, in run order (default: "
                        f"{','.join(BROKERS)}, with dari-base first if --base-src is given)")
    parser.add_argument("--base-src", type=Path,
                        help="src directory of another dari tree, run as broker dari-base")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (broker logs)")
    args = parser.parse_args(argv)
    try:
        run(default_brokers(args.brokers, args.base_src), set(args.only),
            Settings.quick() if args.quick else Settings(), args.keep, args.base_src)
    except KeyboardInterrupt:
        print("\ninterrupted; brokers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
