"""Admin API handlers on a real data directory, driven by kafka-python's protocol objects.

Requests are encoded by kafka-python (an independent implementation of the Kafka schemas),
parsed by our codec, answered by ``KafkaAdmin`` over a real ``TopicManager`` and decoded back
by kafka-python, so every answer here is also proven to be valid on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.admin import (
    AlterConfigsRequest,
    DeleteRecordsRequest,
    DescribeClusterRequest,
    DescribeConfigsRequest,
    DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest,
)
from kafka.protocol.consumer import OffsetForLeaderEpochRequest
from kafka.protocol.parser import KafkaProtocol

from dari.config import Settings
from dari.protocol.kafka import (
    SUPPORTED_APIS,
    RequestFramer,
    RequestHeader,
    encode_response,
    parse_request,
    request_class,
)
from dari.records import build_batch
from dari.server.app import broker_log_config
from dari.server.kafka_admin import TOPIC_CONFIGS, KafkaAdmin
from dari.storage import LogStore
from dari.streams.topics import TopicManager

TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
DYNAMIC_TOPIC, STATIC_BROKER, DEFAULT = 1, 4, 5
INVALID_CONFIG, INVALID_REQUEST, UNKNOWN_TOPIC = 40, 42, 3


class Harness:
    """A KafkaAdmin over a real data directory, spoken to through kafka-python's codec."""

    def __init__(self, data_dir: Path, **settings: object) -> None:
        self.settings = Settings.load(
            overrides={"data.dir": str(data_dir), **settings}, environ={}
        )
        self.store = LogStore(data_dir)
        self.topics = TopicManager(self.store, broker_log_config(self.settings), 1)
        self.topics.load()
        self.admin = KafkaAdmin(
            self.topics,
            self.settings,
            node_id=self.settings["node.id"],
            cluster_id="test-cluster",
            advertised=lambda: ("broker.example", 9093),
        )

    def call(self, request):
        protocol = KafkaProtocol(client_id="admin-test")
        protocol.send_request(request)
        (frame,) = RequestFramer().feed(bytes(protocol.send_bytes()))
        header, body = parse_request(frame)
        response = self.admin.table[header.api_key](header, body)
        ((_correlation_id, decoded),) = protocol.receive_bytes(encode_response(header, response))
        return decoded

    def produce(self, topic: str, count: int, partition: int = 0) -> None:
        target = self.topics.partition(topic, partition)
        for i in range(count):
            batch = build_batch([(b"key-%d" % i, b"value-%d" % i, (), 1000 + i)], now_ms=1000)
            assert target.append(batch).error is None

    def close(self) -> None:
        self.topics.close()
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data")
    yield h
    h.close()


def describe(h: Harness, resource_type: int, name: str, keys=None, version: int = 4, **kw):
    resource = DescribeConfigsRequest.DescribeConfigsResource(
        resource_type=resource_type, resource_name=name, configuration_keys=keys
    )
    (result,) = h.call(DescribeConfigsRequest[version](resources=[resource], **kw)).results
    return result


def configs_of(result) -> dict[str, object]:
    return {c.name: c for c in result.configs}


def incremental(h: Harness, name: str, *ops, validate_only=False, resource_type=TOPIC):
    res = IncrementalAlterConfigsRequest.AlterConfigsResource
    configs = [
        res.AlterableConfig(name=key, config_operation=op, value=value) for key, op, value in ops
    ]
    request = IncrementalAlterConfigsRequest[1](
        resources=[res(resource_type=resource_type, resource_name=name, configs=configs)],
        validate_only=validate_only,
    )
    (response,) = h.call(request).responses
    return response


def alter(h: Harness, name: str, configs: dict[str, str | None], version=2, **kw):
    res = AlterConfigsRequest.AlterConfigsResource
    entries = [res.AlterableConfig(name=k, value=v) for k, v in configs.items()]
    request = AlterConfigsRequest[version](
        resources=[res(resource_type=kw.pop("resource_type", TOPIC), resource_name=name,
                       configs=entries)],
        validate_only=kw.pop("validate_only", False),
    )
    (response,) = h.call(request).responses
    return response


# -- DescribeConfigs ---------------------------------------------------------------------------
def test_topic_configs_show_overrides_and_broker_derived_defaults(tmp_path):
    h = Harness(tmp_path / "data", **{"log.retention.ms": 3_600_000})
    try:
        h.topics.create("orders", 1, {"segment.bytes": "2048", "cleanup.policy": "compact"})
        result = describe(h, TOPIC, "orders", include_synonyms=True, include_documentation=True)
        assert result.error_code == 0
        configs = configs_of(result)
        assert set(TOPIC_CONFIGS) <= set(configs)
        seg = configs["segment.bytes"]
        assert (seg.value, seg.config_source, seg.read_only) == ("2048", DYNAMIC_TOPIC, False)
        assert [(s.name, s.value, s.source) for s in seg.synonyms] == [
            ("segment.bytes", "2048", DYNAMIC_TOPIC),
            ("log.segment.bytes", str(1 << 30), DEFAULT),
        ]
        retention = configs["retention.ms"]
        assert (retention.value, retention.config_source) == ("3600000", STATIC_BROKER)
        assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
            ("log.retention.ms", "3600000", STATIC_BROKER),
            ("log.retention.ms", "604800000", DEFAULT),
        ]
        compression = configs["compression.type"]
        assert (compression.value, compression.config_source) == ("producer", DEFAULT)
        assert configs["cleanup.policy"].value == "compact"
        assert configs["cleanup.policy"].config_type == 7  # LIST
        assert configs["retention.ms"].config_type == 5  # LONG
        assert configs["max.message.bytes"].documentation
        assert not any(c.is_sensitive for c in result.configs)
    finally:
        h.close()


def test_describe_configs_filters_keys_and_omits_synonyms_unless_asked(harness):
    harness.topics.create("t", 1)
    for version in (1, 2, 3, 4):
        result = describe(harness, TOPIC, "t", keys=["retention.ms", "no.such"], version=version)
        assert [(c.name, c.value) for c in result.configs] == [("retention.ms", "604800000")]
        assert result.configs[0].synonyms == []
        if version >= 3:
            assert result.configs[0].documentation is None


def test_describe_configs_errors_name_the_problem(harness):
    unknown = describe(harness, TOPIC, "missing")
    assert (unknown.error_code, unknown.configs) == (UNKNOWN_TOPIC, [])
    assert "missing" in unknown.error_message
    logger = describe(harness, BROKER_LOGGER, "0")
    assert logger.error_code == INVALID_REQUEST
    assert "BROKER_LOGGER" in logger.error_message
    other = describe(harness, 99, "x")
    assert other.error_code == INVALID_REQUEST
    assert "resource type" in other.error_message
    wrong_broker = describe(harness, BROKER, "7")
    assert wrong_broker.error_code == INVALID_REQUEST
    assert "Unexpected broker id" in wrong_broker.error_message


def test_broker_configs_are_the_settings_under_kafka_names(tmp_path):
    h = Harness(tmp_path / "data", **{"num.partitions": 3, "auto.create.topics.enable": False})
    try:
        result = describe(h, BROKER, "0", include_synonyms=True)
        assert result.error_code == 0
        configs = configs_of(result)
        assert configs["num.partitions"].value == "3"
        assert configs["num.partitions"].config_source == STATIC_BROKER
        assert configs["auto.create.topics.enable"].value == "false"
        assert configs["log.segment.bytes"].value == str(1 << 30)
        assert configs["log.segment.bytes"].config_source == DEFAULT
        assert configs["log.cleanup.policy"].value == "delete"
        assert configs["broker.id"].value == "0"
        assert configs["log.dirs"].value == str((tmp_path / "data").resolve())
        assert configs["advertised.listeners"].value == "PLAINTEXT://broker.example:9093"
        assert all(c.read_only for c in result.configs)
        names = [c.name for c in result.configs]
        assert len(names) == len(set(names))
        # The cluster-wide default resource holds only dynamic defaults: none here.
        assert describe(h, BROKER, "").configs == []
    finally:
        h.close()


# -- AlterConfigs / IncrementalAlterConfigs -----------------------------------------------------
def test_incremental_set_delete_append_subtract(harness):
    harness.topics.create("t", 2)
    ok = incremental(harness, "t", ("retention.ms", SET, "1000"), ("segment.bytes", SET, "4096"))
    assert (ok.error_code, ok.error_message) == (0, None)
    assert harness.topics.get("t").configs == {"retention.ms": "1000", "segment.bytes": "4096"}
    for plog in harness.topics.get("t").partitions:
        assert (plog.config.retention_ms, plog.config.segment_bytes) == (1000, 4096)

    assert incremental(harness, "t", ("cleanup.policy", APPEND, "compact")).error_code == 0
    assert harness.topics.get("t").configs["cleanup.policy"] == "delete,compact"
    assert incremental(harness, "t", ("cleanup.policy", SUBTRACT, "delete")).error_code == 0
    assert harness.topics.get("t").configs["cleanup.policy"] == "compact"

    assert incremental(harness, "t", ("retention.ms", DELETE, None)).error_code == 0
    assert "retention.ms" not in harness.topics.get("t").configs
    assert harness.topics.get("t").partitions[0].config.retention_ms == 604_800_000
    assert configs_of(describe(harness, TOPIC, "t"))["retention.ms"].config_source == DEFAULT


def test_alterations_are_persisted(tmp_path):
    h = Harness(tmp_path / "data")
    h.topics.create("t", 1)
    assert incremental(h, "t", ("segment.ms", SET, "60000")).error_code == 0
    h.close()
    meta = json.loads((tmp_path / "data" / ".meta" / "topics" / "t.json").read_text())
    assert meta["configs"] == {"segment.ms": "60000"}
    again = Harness(tmp_path / "data")
    try:
        assert again.topics.get("t").partitions[0].config.segment_ms == 60000
        entry = configs_of(describe(again, TOPIC, "t"))["segment.ms"]
        assert (entry.value, entry.config_source) == ("60000", DYNAMIC_TOPIC)
    finally:
        again.close()


def test_alter_configs_replaces_the_whole_override_set(harness):
    harness.topics.create("t", 1, {"retention.ms": "1000", "segment.bytes": "4096"})
    for version in (0, 1, 2):
        response = alter(harness, "t", {"retention.bytes": "500000", "flush.ms": None}, version)
        assert response.error_code == 0
        assert harness.topics.get("t").configs == {"retention.bytes": "500000"}
    plog = harness.topics.get("t").partitions[0]
    assert (plog.config.retention_bytes, plog.config.segment_bytes) == (500000, 1 << 30)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("retention.ms", "soon", "Invalid value soon for configuration retention.ms"),
        ("segment.bytes", "10", "Invalid value 10 for configuration segment.bytes"),
        ("cleanup.policy", "forever", "Invalid value forever for configuration cleanup.policy"),
        ("compression.type", "brotli", "configuration compression.type"),
        ("preallocate", "maybe", "configuration preallocate"),
        ("min.cleanable.dirty.ratio", "2", "configuration min.cleanable.dirty.ratio"),
        ("flush.policy", "sometimes", "configuration flush.policy"),
        ("retention.msx", "1", "Unknown topic config name: retention.msx"),
    ],
)
def test_bad_values_and_unknown_names_are_invalid_config(harness, name, value, message):
    harness.topics.create("t", 1, {"retention.ms": "1000"})
    for response in (
        incremental(harness, "t", (name, SET, value)),
        alter(harness, "t", {name: value}),
    ):
        assert response.error_code == INVALID_CONFIG
        assert message in response.error_message
    assert harness.topics.get("t").configs == {"retention.ms": "1000"}


def test_append_to_a_non_list_config_and_null_set_are_refused(harness):
    harness.topics.create("t", 1)
    response = incremental(harness, "t", ("retention.ms", APPEND, "5"))
    assert response.error_code == INVALID_CONFIG
    assert "append is not allowed for config key: retention.ms" in response.error_message
    response = incremental(harness, "t", ("retention.ms", SET, None))
    assert response.error_code == INVALID_REQUEST
    response = incremental(harness, "t", ("retention.ms", SET, "1"), ("retention.ms", SET, "2"))
    assert response.error_code == INVALID_REQUEST
    assert "duplicate config keys" in response.error_message
    assert harness.topics.get("t").configs == {}


def test_validate_only_changes_nothing(harness):
    harness.topics.create("t", 1)
    response = incremental(harness, "t", ("retention.ms", SET, "1000"), validate_only=True)
    assert response.error_code == 0
    response = alter(harness, "t", {"segment.bytes": "2048"}, validate_only=True)
    assert response.error_code == 0
    bad = alter(harness, "t", {"segment.bytes": "nope"}, validate_only=True)
    assert bad.error_code == INVALID_CONFIG
    assert harness.topics.get("t").configs == {}
    assert harness.topics.get("t").partitions[0].config.retention_ms == 604_800_000


def test_unknown_topic_and_broker_alterations(harness):
    missing = incremental(harness, "nope", ("retention.ms", SET, "1"))
    assert missing.error_code == UNKNOWN_TOPIC
    broker = incremental(harness, "0", ("log.retention.ms", SET, "1"), resource_type=BROKER)
    assert broker.error_code == INVALID_REQUEST
    assert "Cannot update these configs dynamically" in broker.error_message
    assert alter(harness, "", {}, resource_type=BROKER).error_code == 0


# -- DescribeCluster -------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 1])
def test_describe_cluster(harness, version):
    response = harness.call(
        DescribeClusterRequest[version](include_cluster_authorized_operations=False)
    )
    assert (response.error_code, response.cluster_id, response.controller_id) == (
        0, "test-cluster", 0,
    )
    [(broker_id, host, port)] = [(b.broker_id, b.host, b.port) for b in response.brokers]
    assert (broker_id, host, port) == (0, "broker.example", 9093)
    assert response.authorized_operations is None  # not asked for
    with_ops = harness.call(
        DescribeClusterRequest[version](include_cluster_authorized_operations=True)
    )
    describe, alter_configs = 8, 11  # AclOperation codes; no ACLs here, so every operation
    assert {describe, alter_configs} <= with_ops.authorized_operations


# -- DeleteRecords -------------------------------------------------------------------------------
def delete_records(h: Harness, topic: str, *offsets: tuple[int, int], version: int = 2):
    t = DeleteRecordsRequest.DeleteRecordsTopic
    request = DeleteRecordsRequest[version](
        topics=[t(name=topic, partitions=[t.DeleteRecordsPartition(partition_index=p, offset=o)
                                          for p, o in offsets])],
        timeout_ms=1000,
    )
    (topic_result,) = h.call(request).topics
    return [(p.partition_index, p.low_watermark, p.error_code) for p in topic_result.partitions]


def test_delete_records(harness):
    harness.topics.create("t", 2)
    harness.produce("t", 10, 0)
    harness.produce("t", 4, 1)
    assert delete_records(harness, "t", (0, 6), (1, -1)) == [(0, 6, 0), (1, 4, 0)]
    assert harness.topics.partition("t", 0).log_start_offset == 6
    # Below the current start: a no-op answering the current low watermark.
    assert delete_records(harness, "t", (0, 2), version=0) == [(0, 6, 0)]
    assert delete_records(harness, "t", (0, 11), (1, -5), (2, 0)) == [
        (0, -1, 1), (1, -1, 1), (2, -1, UNKNOWN_TOPIC),
    ]


def test_delete_records_refused_on_compacted_topics(harness):
    harness.topics.create("t", 1, {"cleanup.policy": "compact"})
    harness.produce("t", 3)
    assert delete_records(harness, "t", (0, 1)) == [(0, -1, 44)]  # POLICY_VIOLATION


# -- OffsetForLeaderEpoch ------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3, 4])
def test_offset_for_leader_epoch(harness, version):
    harness.topics.create("t", 1)
    harness.produce("t", 5)
    t = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
    part = t.OffsetForLeaderPartition
    cases = [(-1, 0), (0, 0), (0, 3), (-1, -1), (1, 0), (-3, 0)]  # (current epoch, epoch)
    request = OffsetForLeaderEpochRequest[version](
        replica_id=-1,
        topics=[
            t(topic="t", partitions=[part(partition=0, current_leader_epoch=c, leader_epoch=e)
                                     for c, e in cases]),
            t(topic="nope", partitions=[part(partition=0, current_leader_epoch=-1,
                                             leader_epoch=0)]),
        ],
    )
    topics = harness.call(request).topics
    assert [t.topic for t in topics] == ["t", "nope"]
    known, unknown = topics
    assert [(p.error_code, p.leader_epoch, p.end_offset) for p in known.partitions] == [
        (0, 0, 5),  # epoch 0 ends at the log end
        (0, 0, 5),
        (0, -1, -1),  # an epoch after the latest is unknown
        (0, -1, -1),  # undefined epoch
        (75, -1, -1),  # the client knows a newer leader epoch: UNKNOWN_LEADER_EPOCH
        (74, -1, -1),  # an older one: FENCED_LEADER_EPOCH
    ]
    assert [p.error_code for p in unknown.partitions] == [UNKNOWN_TOPIC]


# -- DescribeLogDirs -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_describe_log_dirs(harness, version):
    harness.topics.create("a", 2)
    harness.topics.create("b", 1)
    harness.produce("a", 3, 1)
    everything = harness.call(DescribeLogDirsRequest[version](topics=None))
    (result,) = everything.results
    assert result.log_dir == str(harness.store.data_dir.resolve())
    sizes = {(t.name, p.partition_index): p.partition_size
             for t in result.topics for p in t.partitions}
    assert set(sizes) == {("a", 0), ("a", 1), ("b", 0)}
    assert sizes[("a", 1)] == harness.topics.partition("a", 1).size_bytes > 0
    assert sizes[("a", 0)] == 0
    assert all(not p.is_future_key and p.offset_lag == 0
               for t in result.topics for p in t.partitions)
    if version >= 4:
        assert result.total_bytes >= result.usable_bytes > 0
    wanted = DescribeLogDirsRequest.DescribableLogDirTopic
    some = harness.call(DescribeLogDirsRequest[version](
        topics=[wanted(topic="a", partitions=[1, 7]), wanted(topic="zz", partitions=[0])]
    ))
    assert [(t.name, [p.partition_index for p in t.partitions])
            for t in some.results[0].topics] == [("a", [1])]


# -- hostile input -------------------------------------------------------------------------------
ADMIN_VERSIONS = [
    (key, version)
    for key in sorted(KafkaAdmin.API_KEYS)
    for version in range(SUPPORTED_APIS[key][0], SUPPORTED_APIS[key][1] + 1)
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("admin") / "data")
    h.topics.create("t", 2, {"retention.ms": "1000"})
    h.produce("t", 3)
    yield h
    h.close()


@pytest.mark.parametrize(("api_key", "version"), ADMIN_VERSIONS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_decodable_request_gets_an_encodable_answer(shared, api_key, version, data):
    body = data.draw(st.from_type(request_class(api_key, version)))
    header = RequestHeader(api_key, version, 1, "fuzz")
    response = shared.admin.table[api_key](header, body)
    frame = encode_response(header, response)
    assert len(frame) > 8
    assert shared.topics.get("t") is not None
