"""Kafka's topic config catalogue and where it is applied: TopicManager's create and alter, on a
real data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dari.server.kafka import kafka_host
from dari.storage import LogConfig, LogStore
from dari.streams.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    TopicExistsError,
)
from dari.streams.topic_configs import TOPIC_CONFIGS, check_topic_configs, config_key
from dari.streams.topics import TopicManager


@pytest.fixture
def topics(tmp_path: Path) -> Iterator[TopicManager]:
    store = LogStore(tmp_path / "data")
    manager = TopicManager(store, LogConfig(), 1)
    manager.load()
    yield manager
    manager.close()
    store.close()


def refusal(configs: dict[str, str | None], current: dict[str, str] | None = None) -> str:
    with pytest.raises(InvalidConfigError) as info:
        check_topic_configs(configs, current)
    return str(info.value)


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        ({"retention.ms": "1 day"}, "Invalid value 1 day for configuration retention.ms: "
         "Not a number of type LONG"),
        ({"cleanup.policy": "delete, forever"}, "Invalid value forever for configuration "
         "cleanup.policy: String must be one of: compact, delete"),
        ({"cleanup.policy": ""}, "Invalid value  for configuration cleanup.policy: "
         "String must be one of: compact, delete"),
        ({"min.cleanable.dirty.ratio": "1.5"}, "Invalid value 1.5 for configuration "
         "min.cleanable.dirty.ratio: Value must be no more than 1"),
        ({"min.cleanable.dirty.ratio": "nan"}, "Invalid value nan for configuration "
         "min.cleanable.dirty.ratio: Not a number of type DOUBLE"),
        ({"preallocate": "yes"}, "Invalid value yes for configuration preallocate: "
         "Expected value to be either true or false"),
        ({"segment.bytes": "13"}, "Invalid value 13 for configuration segment.bytes: "
         "Value must be at least 14"),
        # Names are checked before values, nulls before both, as in Kafka.
        ({"retention.ms": "x", "no.such": "1"}, "Unknown topic config name: no.such"),
        ({"no.such": "1", "retention.ms": None, "segment.ms": None},
         "Null value not supported for topic configs: retention.ms,segment.ms"),
    ],
)
def test_refusals_use_kafkas_wording(configs, message):
    assert refusal(configs) == message


def test_values_are_trimmed_and_stored_overrides_are_not_checked_again():
    assert check_topic_configs({"retention.ms": " 10 ", "cleanup.policy": "compact"}) == {
        "retention.ms": "10",
        "cleanup.policy": "compact",
    }
    legacy = {"no.such": "1", "retention.ms": "10"}
    assert check_topic_configs({**legacy, "segment.ms": "5"}, legacy) == {
        **legacy,
        "segment.ms": "5",
    }
    assert refusal({"no.such": "2"}, legacy) == "Unknown topic config name: no.such"
    assert config_key("flush.policy") is TOPIC_CONFIGS["flush.policy"]


def test_create_refuses_bad_configs_in_kafkas_order_and_creates_nothing(topics, tmp_path):
    with pytest.raises(InvalidConfigError, match="Unknown topic config name: nope"):
        topics.create("t", 1, {"nope": "1"})
    with pytest.raises(InvalidConfigError):  # configs come before partitions and replicas
        topics.create("t", 0, {"retention.ms": "x"}, replication_factor=3)
    with pytest.raises(InvalidConfigError):
        topics.create("t", 1, {"retention.ms": "x"}, validate_only=True)
    assert topics.get("t") is None
    assert not (tmp_path / "data" / "t-0").exists()

    with pytest.raises(InvalidPartitionsError):
        topics.create("t", 0)
    with pytest.raises(InvalidReplicationFactorError):
        topics.create("t", 1, replication_factor=2)

    topic = topics.create("t", 1, {"retention.ms": " 1000 "}, replication_factor=1)
    assert topic.configs == {"retention.ms": "1000"}
    assert topic.partitions[0].config.retention_ms == 1000
    with pytest.raises(TopicExistsError):  # existence comes before configs
        topics.create("t", 1, {"nope": "1"})


def test_alter_validates_through_the_catalogue(topics):
    topics.create("t", 1, {"retention.ms": "1000"})
    with pytest.raises(InvalidConfigError, match="Unknown topic config name: nope"):
        topics.alter_configs("t", {"retention.ms": "1000", "nope": "1"})
    topics.alter_configs("t", {"retention.ms": "2000", "segment.ms": "60000"})
    topic = topics.get("t")
    assert topic.configs == {"retention.ms": "2000", "segment.ms": "60000"}
    assert topic.partitions[0].config.segment_ms == 60000


@pytest.mark.parametrize(
    ("peername", "host"),
    [
        (("127.0.0.1", 50123), "/127.0.0.1"),
        (("::1", 50123, 0, 0), "/0:0:0:0:0:0:0:1"),
        (("::ffff:10.1.2.3", 50123, 0, 0), "/10.1.2.3"),
        (("fe80::1%eth0", 50123, 0, 2), "/fe80:0:0:0:0:0:0:1%eth0"),
        (("2001:db8::ab:1", 9092, 0, 0), "/2001:db8:0:0:0:0:ab:1"),
        (None, ""),
    ],
)
def test_member_hosts_read_as_javas_inet_address(peername, host):
    assert kafka_host(peername) == host
