"""The `dari serve` process contract: ready line, signals, data-dir lock, env and TOML config."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError

from broker import Broker, run_serve

from .clients import admin, consume_range, produce_all, producer
from .test_restart import batch

Factory = Callable[..., Broker]


def test_sigint_exits_cleanly_and_keeps_data(make_broker: Factory, topic: str) -> None:
    broker = make_broker()
    lines = broker.stdout().splitlines()
    assert len(lines) == 1, f"stdout must be exactly the ready line:\n{broker.stdout()}"
    assert re.fullmatch(rf"dari ready kafka={broker.bootstrap} amqp=127\.0\.0\.1:\d+", lines[0])
    sent = batch(0, 20, "sigint")
    produce_all(producer(broker.bootstrap, acks="all"), topic, sent)
    broker.terminate(signal.SIGINT)
    broker.restart()
    got = consume_range(broker.bootstrap, topic)
    assert [r.value for r in got] == [s.value for s in sent]


def test_second_broker_on_same_data_dir_is_refused(broker: Broker) -> None:
    proc = run_serve(["--data-dir", str(broker.data_dir), "--kafka", "127.0.0.1:0"])
    assert proc.returncode != 0, f"second broker started on a locked data dir:\n{proc.stdout}"
    output = proc.stdout + proc.stderr
    assert "in use" in output, f"no 'in use' message:\n{output}"
    assert "dari ready" not in proc.stdout
    assert broker.running, "the first broker must be unaffected"


def test_environment_variables_configure_serve(make_broker: Factory, topic: str) -> None:
    broker = make_broker(via_env=True, env={"DARI_NUM_PARTITIONS": "2"})
    assert "--data-dir" not in broker.command()
    produce_all(producer(broker.bootstrap), topic, batch(0, 3, "env"))
    assert broker.partition_dir(topic).is_dir(), f"no partition dir under {broker.data_dir}"
    meta = admin(broker.bootstrap).list_topics(topic=topic, timeout=10)
    assert sorted(meta.topics[topic].partitions) == [0, 1], "DARI_NUM_PARTITIONS ignored"


def test_auto_create_can_be_disabled(make_broker: Factory, topic: str) -> None:
    broker = make_broker(settings={"auto.create.topics.enable": False})
    meta = admin(broker.bootstrap).list_topics(topic=topic, timeout=10)
    tmeta = meta.topics.get(topic)
    assert tmeta is not None and tmeta.error is not None, f"topic was created: {tmeta}"
    assert tmeta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, str(tmeta.error)
    assert not broker.partition_dir(topic).exists()


def test_toml_config_and_set_flags(make_broker: Factory, tmp_path: Path, topic: str) -> None:
    config = tmp_path / "dari.toml"
    config.write_text('"num.partitions" = 3\n"auto.create.topics.enable" = true\n')
    broker = make_broker(extra_args=["--config", str(config)])
    produce_all(producer(broker.bootstrap), topic, batch(0, 3, "toml"))
    meta = admin(broker.bootstrap).list_topics(topic=topic, timeout=10)
    assert sorted(meta.topics[topic].partitions) == [0, 1, 2], "num.partitions from TOML ignored"

    flagged = make_broker(settings={"num.partitions": 2})
    other = f"{topic}-flag"
    produce_all(producer(flagged.bootstrap), other, batch(0, 3, "flag"))
    meta = admin(flagged.bootstrap).list_topics(topic=other, timeout=10)
    assert sorted(meta.topics[other].partitions) == [0, 1], "--set num.partitions ignored"
