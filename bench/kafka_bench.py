"""Kafka benchmark: dari against Tansu, with librdkafka clients (confluent-kafka and kcat).

For each broker in turn: start it (start-up time, idle RSS), then run the selected groups:
  produce  confluent Producer, 100 B and 1 KiB records, acks=1 and acks=all, linger.ms=5
  consume  confluent Consumer with assign() from offset 0, reading what `produce` wrote
  kcat     the same 100 B produce (acks=1, acks=all) and a consume, through kcat's C loop
  latency  end-to-end p50/p99 at a fixed rate, acks=all, one partition
  startup  spawn -> ready, spawn -> first metadata answer, idle RSS
Clients run in their own processes; broker CPU % is psutil CPU time of the broker process tree
over the timed window (100 % = one core). MB is 10^6 bytes of record values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench import brokers, procs
from bench.report import Entry, Results, render

GROUPS = ("startup", "produce", "consume", "kcat", "latency")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
KCAT = "/usr/bin/kcat"
_KCAT_EOF = re.compile(r"Reached end of topic \S+ \[(\d+)\] at offset (\d+)")


@dataclass(frozen=True)
class Settings:
    """Workload sizes; `quick` shrinks every count for smoke runs."""

    small: tuple[int, int] = (100, 1_000_000)  # (record bytes, count)
    large: tuple[int, int] = (1024, 300_000)
    partitions: int = 3
    latency_rate: int = 5_000
    latency_duration_s: float = 10.0
    latency_warmup_s: float = 1.0
    latency_size: int = 100
    idle_s: float = 1.0

    @classmethod
    def quick(cls) -> Settings:
        return cls(small=(100, 50_000), large=(1024, 15_000), latency_duration_s=3.0,
                   latency_warmup_s=0.5)


class ClientFailed(RuntimeError):
    """A client process crashed, timed out or reported a fatal error."""


@dataclass
class Window:
    """Wall time and broker CPU over one timed section."""

    wall_s: float
    cpu_pct: float


class _Timer:
    """Samples broker CPU at the start and end of a timed section."""

    def __init__(self, broker: brokers.Broker) -> None:
        self.broker = broker
        self.t0 = self.c0 = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), self.broker.cpu_seconds()

    def stop(self) -> Window:
        wall = time.perf_counter() - self.t0
        cpu = self.broker.cpu_seconds() - self.c0
        return Window(wall, 100.0 * cpu / wall if wall > 0 else 0.0)


class Client:
    """A `bench.clients` worker process speaking the START / READY / RESULT line protocol."""

    def __init__(self, spec: dict[str, Any], log_dir: Path) -> None:
        self.log_path = log_dir / f"client-{spec['mode']}-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("wb") as err:
            self.proc = procs.spawn(
                [sys.executable, "-m", "bench.clients", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def expect(self, word: str, deadline: float) -> str:
        """Block until a line starting with `word`; return the rest of it."""
        assert self.proc.stdout is not None
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                self.close()
                raise ClientFailed(f"timed out waiting for {word}")
            if not self.sel.select(left):
                continue
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                self.close()
                tail = self.log_path.read_text(errors="replace")[-600:]
                raise ClientFailed(f"client exited before {word}: {tail.strip()}")
            if line.startswith(word):
                return line[len(word):].strip()

    def result(self, deadline: float) -> dict[str, Any]:
        data = json.loads(self.expect("RESULT", deadline))
        self.close()
        if "fatal" in data:
            raise ClientFailed(data["fatal"])
        return data

    def close(self) -> None:
        self.sel.close()
        procs.stop(self.proc, timeout=10)


def _describe(exc: BaseException) -> str:
    """A short, never empty, error text (str() of a bare TimeoutError is '')."""
    return (str(exc) or repr(exc))[:300]


def _timeout(count: int) -> float:
    """Generous per-client limit so a stuck broker fails one row instead of hanging the run."""
    return 60.0 + count / 5_000


class KafkaBench:
    """Runs the selected groups against one broker at a time and collects `Entry` rows."""

    def __init__(self, settings: Settings, groups: set[str], workdir: Path,
                 kcat_env: dict[str, str]) -> None:
        self.s = settings
        self.groups = groups
        self.workdir = workdir
        self.kcat_env = kcat_env
        self.results = Results()
        self._kcat_file: Path | None = None
        # librdkafka >= 2.1 only; see the consumer settings in bench.clients.
        new_lib = "LD_LIBRARY_PATH" in kcat_env
        self.kcat_consume_extra = ["-X", "fetch.queue.backoff.ms=10"] if new_lib else []

    # -- helpers ------------------------------------------------------------------------------

    def _topic(self, broker: brokers.Broker, label: str, partitions: int) -> str:
        name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(30)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            md = admin.list_topics(name, timeout=10).topics.get(name)
            if md and not md.error and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()
            ):
                return name
            time.sleep(0.05)
        raise ClientFailed(f"topic {name} not ready")

    @staticmethod
    def _stored(broker: brokers.Broker, topic: str, partitions: int) -> int:
        """Records the broker holds: the sum of the high watermarks its Fetch responses report.
        (ListOffsets is not used: Tansu 0.6 answers it with the last batch's base offset.)"""
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dari-bench-check",
                      "enable.partition.eof": True, "enable.auto.commit": False,
                      "max.partition.fetch.bytes": 1024, "fetch.wait.max.ms": 10})
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            for tp in tps:
                c.get_watermark_offsets(tp, timeout=30)
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
            seen: set[int] = set()
            deadline = time.perf_counter() + 60
            while len(seen) < partitions and time.perf_counter() < deadline:
                seen.update(m.partition() for m in c.consume(1000, 0.5))
            if len(seen) < partitions:
                raise ClientFailed("no fetch answer while counting stored records")
            return sum(c.get_watermark_offsets(tp, cached=True)[1] for tp in tps)
        finally:
            c.close()

    def _run_client(self, broker: brokers.Broker, spec: dict[str, Any],
                    count: int) -> tuple[dict[str, Any], Window]:
        spec = {"bootstrap": broker.bootstrap, **spec}
        client = Client(spec, self.workdir)
        deadline = time.perf_counter() + _timeout(count)
        timer = _Timer(broker)
        try:
            client.expect("START", deadline)
            timer.start()
            result = client.result(deadline)
            return result, timer.stop()
        finally:
            client.close()

    def _throughput(self, broker: brokers.Broker, group: str, scenario: str, count: int,
                    size: int, run: Any) -> None:
        """Run `run() -> (records, seconds, window, detail)` and add msg/s and MB/s rows."""
        name = broker.name
        try:
            if not broker.alive():
                raise ClientFailed(f"broker exited with code {broker.proc.returncode}")
            records, seconds, window, detail = run()
            error = None if records == count else f"{records} of {count} records"
        except Exception as exc:  # one failed row must not stop the run
            records, seconds, window, detail, error = 0, 0.0, None, {}, _describe(exc)
        ok = error is None and seconds > 0
        cpu = window.cpu_pct if window and ok else None
        detail = {"count": count, "size": size, "seconds": seconds, **detail}
        rates = (("msg/s", records / seconds if ok else None),
                 ("MB/s", records * size / seconds / 1e6 if ok else None))
        for unit, value in rates:
            self.results.add(name, Entry(group, scenario, unit, unit, "higher", value, cpu,
                                         error, detail))

    # -- groups -------------------------------------------------------------------------------

    def startup(self, broker: brokers.Broker) -> None:
        """Spawn -> ready, spawn -> first metadata, then RSS and CPU over an idle second."""
        timer = _Timer(broker)
        timer.start()
        time.sleep(self.s.idle_s)
        idle = timer.stop()
        rss = broker.rss_bytes() / 2**20
        name = broker.name
        ready_what = "ready line" if name == "dari" else "first metadata"
        detail = {"ready_point": ready_what}
        self.results.add(name, Entry("startup", "start -> ready", "ms", "ms", "lower",
                                     broker.ready_s * 1e3, None, None, detail))
        self.results.add(name, Entry("startup", "start -> first metadata answer", "ms", "ms",
                                     "lower", broker.probe_s * 1e3))
        self.results.add(name, Entry("startup", "idle after start", "RSS", "MiB", "lower", rss,
                                     idle.cpu_pct))

    def produce_one(self, broker: brokers.Broker, size: int, count: int, acks: str,
                    group: str = "produce") -> str:
        topic = ""

        def run() -> tuple[int, float, Window, dict[str, Any]]:
            nonlocal topic
            topic = self._topic(broker, f"{size}b-acks{acks}", self.s.partitions)
            spec = {"mode": "produce", "topic": topic, "size": size, "count": count,
                    "acks": acks}
            res, window = self._run_client(broker, spec, count)
            stored = self._stored(broker, topic, self.s.partitions)
            # Stored records are the truth (catches lost and duplicated records alike); a
            # client-side failure still counts against the run if the broker kept the record.
            acked = stored if res["count"] == count else min(stored, res["count"])
            return acked, res["elapsed_s"], window, {"stored": stored, **res}

        self._throughput(broker, group, f"produce {size} B acks={acks}", count, size, run)
        return topic

    def produce(self, broker: brokers.Broker) -> dict[int, str]:
        """Returns the acks=1 topic per record size, which `consume` reads back."""
        topics: dict[int, str] = {}
        for size, count in (self.s.small, self.s.large):
            for acks in ("1", "all"):
                topic = self.produce_one(broker, size, count, acks)
                if acks == "1":
                    topics[size] = topic
        return topics

    def _fill(self, broker: brokers.Broker, size: int, count: int) -> str:
        """Untimed data for `consume` when `produce` was not selected."""
        topic = self._topic(broker, f"{size}b-fill", self.s.partitions)
        spec = {"mode": "produce", "topic": topic, "size": size, "count": count, "acks": "1"}
        self._run_client(broker, spec, count)
        return topic

    def consume(self, broker: brokers.Broker, topics: dict[int, str]) -> None:
        for size, count in (self.s.small, self.s.large):
            def run(size: int = size, count: int = count) -> Any:
                topic = topics.get(size) or self._fill(broker, size, count)
                spec = {"mode": "consume", "topic": topic, "size": size, "count": count}
                res, window = self._run_client(broker, spec, count)
                return res["count"], res["elapsed_s"], window, res

            self._throughput(broker, "consume", f"consume {size} B", count, size, run)

    def _kcat(self, broker: brokers.Broker, args: list[str],
              timeout: float) -> tuple[str, Window]:
        argv = [KCAT, "-b", broker.bootstrap, *args]
        err_path = self.workdir / f"kcat-{uuid.uuid4().hex[:6]}.log"
        timer = _Timer(broker)
        with err_path.open("wb") as err, open(os.devnull, "wb") as null:
            timer.start()
            proc = procs.spawn(argv, stdout=null, stderr=err, stdin=subprocess.DEVNULL,
                               env=self.kcat_env)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                procs.stop(proc)
                raise ClientFailed(f"kcat timed out after {timeout:.0f} s") from None
            window = timer.stop()
            procs.stop(proc)
        stderr = err_path.read_text(errors="replace")
        if proc.returncode != 0:
            raise ClientFailed(f"kcat exited {proc.returncode}: {stderr.strip()[-300:]}")
        return stderr, window

    def _lines_file(self, size: int, count: int) -> Path:
        if self._kcat_file is None:
            path = self.workdir / f"lines-{size}x{count}.txt"
            path.write_bytes((b"k" * size + b"\n") * count)
            self._kcat_file = path
        return self._kcat_file

    def kcat(self, broker: brokers.Broker) -> None:
        size, count = self.s.small
        lines = self._lines_file(size, count)
        consume_topic = ""
        for acks in ("1", "all"):
            def produce_run(acks: str = acks) -> Any:
                nonlocal consume_topic
                topic = self._topic(broker, f"kcat-{size}b-acks{acks}", self.s.partitions)
                consume_topic = consume_topic or topic
                args = ["-P", "-t", topic, "-l", str(lines), "-X", "linger.ms=5",
                        "-X", f"acks={acks}", "-X", "batch.size=1000000",
                        "-X", "queue.buffering.max.messages=2000000",
                        "-X", "queue.buffering.max.kbytes=2097151"]
                stderr, window = self._kcat(broker, args, _timeout(count))
                stored = self._stored(broker, topic, self.s.partitions)
                return stored, window.wall_s, window, {"stored": stored,
                                                       "stderr": stderr[-300:]}

            self._throughput(broker, "kcat", f"kcat produce {size} B acks={acks}", count,
                             size, produce_run)

        def consume_run() -> Any:
            if not consume_topic:
                raise ClientFailed("nothing to consume: kcat produce failed")
            args = ["-C", "-t", consume_topic, "-e", "-o", "beginning",
                    "-X", "fetch.max.bytes=52428800", "-X", "max.partition.fetch.bytes=10485760",
                    "-X", "queued.min.messages=1000000", *self.kcat_consume_extra,
                    # -e exits on an empty fetch at the end of every partition, and a broker
                    # holds an empty fetch for fetch.wait.max.ms: keep that tail short.
                    "-X", "fetch.wait.max.ms=50"]
            stderr, window = self._kcat(broker, args, _timeout(count))
            got = sum(int(off) for _, off in _KCAT_EOF.findall(stderr))
            return got, window.wall_s, window, {"eof_lines": len(_KCAT_EOF.findall(stderr))}

        self._throughput(broker, "kcat", f"kcat consume {size} B", count, size,
                         consume_run)

    def latency(self, broker: brokers.Broker) -> None:
        """Default consumer settings first; then with fetch.wait.max.ms=10, which shows how much
        of the figure is a broker that holds a long-poll fetch instead of answering on arrival."""
        self.latency_one(broker, None)
        self.latency_one(broker, 10)

    def latency_one(self, broker: brokers.Broker, fetch_wait_ms: int | None) -> None:
        s = self.s
        scenario = f"e2e latency {s.latency_rate} msg/s acks=all"
        if fetch_wait_ms is not None:
            scenario += f" fetch.wait.max.ms={fetch_wait_ms}"
        common: dict[str, Any] = {"rate": s.latency_rate, "duration_s": s.latency_duration_s,
                                  "warmup_s": s.latency_warmup_s, "size": s.latency_size}
        window: Window | None = None
        try:
            if not broker.alive():
                raise ClientFailed(f"broker exited with code {broker.proc.returncode}")
            topic = self._topic(broker, "latency", 1)
            deadline = time.perf_counter() + s.latency_warmup_s + s.latency_duration_s + 180
            wait = {} if fetch_wait_ms is None else {"fetch_wait_max_ms": fetch_wait_ms}
            consumer = Client({"mode": "latency_consume", "bootstrap": broker.bootstrap,
                               "topic": topic, **common, **wait}, self.workdir)
            try:
                consumer.expect("READY", deadline)
                prod_res, window = self._run_client(
                    broker, {"mode": "latency_produce", "topic": topic, "acks": "all",
                             "linger_ms": 5, **common},
                    int(s.latency_rate * (s.latency_warmup_s + s.latency_duration_s)))
                res = consumer.result(deadline)
            finally:
                consumer.close()
            error = None
            if res["count"] != res["expected"]:
                error = f"received {res['count']} of {res['expected']} records"
            detail = {**res, "producer": prod_res}
        except Exception as exc:
            res, detail, error = {}, {}, _describe(exc)
        cpu = window.cpu_pct if window and not error else None
        for metric in ("p50", "p99"):
            value = None if error else res.get(f"{metric}_ms")
            self.results.add(broker.name, Entry("latency", scenario, metric, "ms", "lower",
                                                value, cpu, error, detail))

    # -- driver -------------------------------------------------------------------------------

    def run_broker(self, name: str, tansu_bin: str | None) -> None:
        bdir = self.workdir / name
        print(f"--- {name}: starting", flush=True)
        try:
            broker = brokers.start(name, bdir, tansu_bin)
        except brokers.BrokerStartError as exc:
            print(f"--- {name}: failed to start: {exc}", flush=True)
            self.results.add(name, Entry("startup", "start -> ready", "ms", "ms", "lower",
                                         None, None, str(exc).splitlines()[0]))
            return
        try:
            print(f"--- {name}: ready in {broker.ready_s * 1e3:.0f} ms at {broker.bootstrap}",
                  flush=True)
            steps: list[tuple[str, Any]] = [
                ("startup", lambda: self.startup(broker)),
                ("produce", lambda: topics.update(self.produce(broker))),
                ("consume", lambda: self.consume(broker, topics)),
                ("kcat", lambda: self.kcat(broker)),
                ("latency", lambda: self.latency(broker)),
            ]
            topics: dict[int, str] = {}
            for group, step in steps:
                if group not in self.groups:
                    continue
                if not broker.alive():
                    print(f"--- {name}: broker died; skipping {group}\n{broker.log_tail()}")
                    continue
                t0 = time.perf_counter()
                try:
                    step()
                except Exception as exc:  # report and go on with the next group
                    print(f"--- {name}: {group} crashed: {exc!r}", flush=True)
                print(f"--- {name}: {group} done in {time.perf_counter() - t0:.1f} s",
                      flush=True)
            if "startup" in self.groups:
                self.results.by_broker[name]["idle after start [RSS]"].detail[
                    "rss_after_run_mib"] = broker.rss_bytes() / 2**20
        finally:
            broker.stop()


def _kcat_env(workdir: Path, system_lib: bool) -> tuple[dict[str, str], str]:
    """Point kcat at the librdkafka bundled with confluent-kafka, so both tools share one client
    library version (Debian's kcat links librdkafka 2.0.2, which cannot parse Tansu's
    ApiVersions reply). Returns the environment and a description for the JSON."""
    if not system_lib:
        import confluent_kafka

        libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
        found = sorted(libs.glob("librdkafka*.so*"))
        if found:
            libdir = workdir / "kcat-lib"
            libdir.mkdir(exist_ok=True)
            (libdir / "librdkafka.so.1").symlink_to(found[0])
            env = procs.child_env(LD_LIBRARY_PATH=str(libdir))
            return env, f"bundled {confluent_kafka.libversion()[0]}"
    return procs.child_env(), "system"


def _versions(tansu_bin: str | None, kcat_env: dict[str, str]) -> dict[str, Any]:
    import confluent_kafka

    def out(argv: list[str], env: dict[str, str] | None = None) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
            return (res.stdout or res.stderr).strip().splitlines()[-1 if "kcat" in argv[0]
                                                                   else 0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "unknown"

    tansu = tansu_bin or brokers.find_tansu()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "confluent_kafka": importlib.metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "kcat": out([KCAT, "-V"], kcat_env) if Path(KCAT).exists() else "missing",
        "tansu": out([tansu, "--version"]) if tansu else "missing",
    }


def run(brokers_: list[str], groups: set[str], settings: Settings, tansu_bin: str | None,
        kcat_system_lib: bool, keep: bool) -> Path:
    """Run everything, print the tables, write the JSON and return its path."""
    procs.install_cleanup()
    if "kcat" in groups and not Path(KCAT).exists():
        print(f"{KCAT} not found: skipping the kcat group", file=sys.stderr)
        groups = groups - {"kcat"}
    workdir = Path(tempfile.mkdtemp(prefix="dari-bench-"))
    started = time.time()
    try:
        kcat_env, kcat_lib = _kcat_env(workdir, kcat_system_lib)
        bench = KafkaBench(settings, groups, workdir, kcat_env)
        for name in brokers_:
            bench.run_broker(name, tansu_bin)
        print()
        print(render(bench.results, brokers_))
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        path = RESULTS_DIR / f"kafka-{stamp}.json"
        doc = {
            "started": started, "duration_s": time.time() - started, "argv": sys.argv,
            "brokers": brokers_, "groups": sorted(groups),
            "settings": dataclasses.asdict(settings), "kcat_librdkafka": kcat_lib,
            "versions": _versions(tansu_bin, kcat_env), "results": bench.results.to_json(),
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
