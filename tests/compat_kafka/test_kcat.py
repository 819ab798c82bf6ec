"""kcat (librdkafka's command-line client, as packaged by Debian) against dari.

Ten thousand keyed records with headers go in through `kcat -P` and must come back through
`kcat -C` unchanged, at contiguous offsets, with the producer's timestamps.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

import pytest

from broker import Broker

N = 10_000
HEADERS = [("trace", "abc-123"), ("source", "kcat")]
KCAT_TIMEOUT_S = 90


@dataclass(frozen=True)
class Produced:
    topic: str
    keys: list[str]
    values: list[str]
    started_ms: int
    finished_ms: int


def value_of(i: int) -> str:
    # Varying lengths and characters a line-based tool can carry (no ':' before the key ends).
    return f"value-{i:05d}-" + "abcdefghij"[: i % 11] + "=x,y;z" * (i % 3)


def run_kcat(kcat: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [kcat, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=KCAT_TIMEOUT_S,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}\nstderr: {proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def produced(kcat: str, module_broker: Broker) -> Produced:
    topic = f"kcat-roundtrip-{time.time_ns() % 10**9}"
    keys = [f"key-{i:05d}" for i in range(N)]
    values = [value_of(i) for i in range(N)]
    lines = "".join(f"{k}:{v}\n" for k, v in zip(keys, values, strict=True))
    header_args = [arg for name, val in HEADERS for arg in ("-H", f"{name}={val}")]
    started = int(time.time() * 1000)
    proc = run_kcat(
        kcat,
        "-P",
        "-b",
        module_broker.bootstrap,
        "-t",
        topic,
        "-K:",
        *header_args,
        "-X",
        "acks=all",
        stdin=lines,
    )
    finished = int(time.time() * 1000)
    assert "ERROR" not in proc.stderr, f"kcat producer reported errors: {proc.stderr[-3000:]}"
    return Produced(topic, keys, values, started, finished)


def test_kcat_consumes_what_it_produced_json(
    kcat: str, module_broker: Broker, produced: Produced
) -> None:
    proc = run_kcat(
        kcat,
        "-C",
        "-b",
        module_broker.bootstrap,
        "-t",
        produced.topic,
        "-e",
        "-q",
        "-o",
        "beginning",
        "-J",
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == N, f"kcat consumed {len(rows)} records, produced {N}"
    offsets = [row["offset"] for row in rows]
    assert offsets == list(range(N)), f"offsets not contiguous 0..{N - 1}: first {offsets[:10]}"
    assert {row["partition"] for row in rows} == {0}, "auto-created topic must have 1 partition"
    for i, row in enumerate(rows):
        assert row["key"] == produced.keys[i], f"offset {i}: key {row['key']!r}"
        assert row["payload"] == produced.values[i], f"offset {i}: value {row['payload']!r}"
        flat = [item for pair in HEADERS for item in pair]
        assert row.get("headers") == flat, f"offset {i}: headers {row.get('headers')!r}"
        assert row["tstype"] == "create", f"offset {i}: timestamp type {row['tstype']!r}"
        assert produced.started_ms - 1 <= row["ts"] <= produced.finished_ms + 1, (
            f"offset {i}: timestamp {row['ts']} outside the production window "
            f"[{produced.started_ms}, {produced.finished_ms}]"
        )
    stamps = [row["ts"] for row in rows]
    assert stamps == sorted(stamps), "CreateTime of sequentially produced records went backwards"


def test_kcat_format_string(kcat: str, module_broker: Broker, produced: Produced) -> None:
    proc = run_kcat(
        kcat,
        "-C",
        "-b",
        module_broker.bootstrap,
        "-t",
        produced.topic,
        "-e",
        "-q",
        "-o",
        "beginning",
        "-f",
        "%k|%s|%h|%T|%o\n",
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == N, f"kcat consumed {len(lines)} records, produced {N}"
    want_headers = ",".join(f"{k}={v}" for k, v in HEADERS)
    for i, line in enumerate(lines):
        key, value, headers, ts, offset = line.split("|")
        assert (key, value, headers, int(offset)) == (
            produced.keys[i],
            produced.values[i],
            want_headers,
            i,
        ), f"line {i}: {line!r}"
        assert produced.started_ms - 1 <= int(ts) <= produced.finished_ms + 1, f"line {i}: {line!r}"


def test_kcat_offset_ranges(kcat: str, module_broker: Broker, produced: Produced) -> None:
    """Start in the middle (absolute and relative to the end): fetches that begin inside a batch."""
    proc = run_kcat(
        kcat, "-C", "-b", module_broker.bootstrap, "-t", produced.topic, "-e", "-q",
        "-o", "4321", "-c", "7", "-f", "%o %k\n",
    )  # fmt: skip
    assert proc.stdout.splitlines() == [f"{o} key-{o:05d}" for o in range(4321, 4328)]
    proc = run_kcat(
        kcat, "-C", "-b", module_broker.bootstrap, "-t", produced.topic, "-e", "-q",
        "-o", "-3", "-f", "%o %k\n",
    )  # fmt: skip
    assert proc.stdout.splitlines() == [f"{o} key-{o:05d}" for o in range(N - 3, N)]


def test_kcat_metadata_lists_topic(kcat: str, module_broker: Broker, produced: Produced) -> None:
    proc = run_kcat(kcat, "-L", "-b", module_broker.bootstrap)
    assert f'topic "{produced.topic}" with 1 partitions:' in proc.stdout, proc.stdout
    proc = run_kcat(kcat, "-L", "-J", "-b", module_broker.bootstrap, "-t", produced.topic)
    meta = json.loads(proc.stdout)
    brokers = {b["id"]: b["name"] for b in meta["brokers"]}
    assert len(brokers) == 1, f"one broker expected, metadata says {meta['brokers']}"
    host, port = next(iter(brokers.values())).rsplit(":", 1)
    assert f"{host}:{port}" == module_broker.bootstrap, (
        f"advertised address {host}:{port} is not the listener {module_broker.bootstrap}"
    )
    topics = {t["topic"]: t for t in meta["topics"]}
    assert produced.topic in topics, f"topic missing from metadata: {list(topics)}"
    parts = topics[produced.topic]["partitions"]
    assert [p["partition"] for p in parts] == [0]
    assert parts[0]["leader"] in brokers, f"partition leader {parts[0]['leader']} is not a broker"
