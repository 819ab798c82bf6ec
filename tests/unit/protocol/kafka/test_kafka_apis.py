"""Bytes produced by an independent client implementation (kafka-python 3's protocol layer,
generated from the same Kafka JSON schemas but by different code) parse correctly, and our
responses decode in it."""

from __future__ import annotations

import uuid

import pytest
from kafka.protocol.admin import (
    AlterConfigsRequest,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    DeleteRecordsRequest,
    DeleteTopicsRequest,
    DescribeClusterRequest,
    DescribeConfigsRequest,
    DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest,
)
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    ListGroupsRequest,
)
from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.producer import ProduceRequest
from kafka.protocol.producer.transaction import InitProducerIdRequest

from dari.protocol.kafka import (
    SUPPORTED_APIS,
    FetchPartitionResult,
    PartitionResult,
    ProduceRequestData,
    RequestFramer,
    api_versions_response,
    build,
    encode_fetch_response,
    encode_produce_response,
    encode_response,
    millis,
    parse_request,
    response_module,
)
from dari.protocol.kafka.apis import decodable_range

# kafka-python loads its schemas with a deprecated importlib API.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CLIENT_CLASSES = {
    0: ProduceRequest,
    1: FetchRequest,
    2: ListOffsetsRequest,
    3: MetadataRequest,
    18: ApiVersionsRequest,
    19: CreateTopicsRequest,
    20: DeleteTopicsRequest,
    22: InitProducerIdRequest,
    37: CreatePartitionsRequest,
    21: DeleteRecordsRequest,
    23: OffsetForLeaderEpochRequest,
    32: DescribeConfigsRequest,
    33: AlterConfigsRequest,
    35: DescribeLogDirsRequest,
    44: IncrementalAlterConfigsRequest,
    60: DescribeClusterRequest,
    8: OffsetCommitRequest,
    9: OffsetFetchRequest,
    10: FindCoordinatorRequest,
    11: JoinGroupRequest,
    12: HeartbeatRequest,
    13: LeaveGroupRequest,
    14: SyncGroupRequest,
    15: DescribeGroupsRequest,
    16: ListGroupsRequest,
    42: DeleteGroupsRequest,
    47: OffsetDeleteRequest,
}


class Client:
    """kafka-python's sans-IO protocol object wired straight to our framer."""

    def __init__(self) -> None:
        self.protocol = KafkaProtocol(client_id="kafka-python-test")
        self.framer = RequestFramer()

    def send(self, request):
        correlation_id = self.protocol.send_request(request)
        (frame,) = self.framer.feed(bytes(self.protocol.send_bytes()))
        header, body = parse_request(frame)
        assert header.correlation_id == correlation_id
        assert header.client_id == "kafka-python-test"
        assert (header.api_key, header.api_version) == (request.API_KEY, request.API_VERSION)
        return header, body

    def receive(self, data):
        ((_correlation_id, response),) = self.protocol.receive_bytes(data)
        return response


# kafka-python 3 has no share-group (KIP-932) request classes; their codecs are checked
# against kio and librdkafka in test_kafka_share_fetch.py and the share-group compat tests.
SHARE_APIS = frozenset({76, 77, 78, 79, 90, 91, 92})


def test_every_client_class_covers_a_supported_api():
    assert set(CLIENT_CLASSES) == set(SUPPORTED_APIS) - SHARE_APIS


@pytest.mark.parametrize(
    ("api_key", "version"),
    [
        (key, version)
        for key in sorted(set(SUPPORTED_APIS) - SHARE_APIS)
        for version in range(
            decodable_range(key, SUPPORTED_APIS)[0], decodable_range(key, SUPPORTED_APIS)[1] + 1
        )
    ],
)
def test_default_requests_of_every_supported_version_parse(api_key, version):
    request = CLIENT_CLASSES[api_key][version]()
    _header, body = Client().send(request)
    assert type(body).__name__ in ("ProduceRequestData", request.name)


@pytest.mark.parametrize("version", range(3, 11))
def test_produce_request_from_kafka_python(version):
    topic = ProduceRequest.TopicProduceData
    partition = topic.PartitionProduceData
    batch = b"\x00" * 61 + b"payload"
    request = ProduceRequest[version](
        transactional_id="tx-1",
        acks=-1,
        timeout_ms=1500,
        topic_data=[
            topic(
                name="orders",
                partition_data=[
                    partition(index=0, records=batch),
                    partition(index=2, records=None),
                ],
            ),
            topic(name="audit", partition_data=[partition(index=1, records=b"")]),
        ],
    )
    client = Client()
    header, body = client.send(request)
    assert isinstance(body, ProduceRequestData)
    assert (body.transactional_id, body.acks, body.timeout_ms) == ("tx-1", -1, 1500)
    assert [
        (
            t.name,
            [(p.index, p.records if p.records is None else bytes(p.records)) for p in t.partitions],
        )
        for t in body.topics
    ] == [
        ("orders", [(0, batch), (2, None)]),
        ("audit", [(1, b"")]),
    ]
    reply = encode_produce_response(
        version, [("orders", [PartitionResult(0, 0, 41, log_start_offset=3)])], throttle_ms=7
    )
    response = client.receive(encode_response(header, reply))
    (topic_response,) = response.responses
    assert topic_response.name == "orders"
    (p,) = topic_response.partition_responses
    assert (p.index, p.error_code, p.base_offset) == (0, 0, 41)
    if version >= 5:
        assert p.log_start_offset == 3
    assert response.throttle_time_ms == 7


@pytest.mark.parametrize("version", range(4, 17))
def test_fetch_request_and_response_with_kafka_python(version):
    topic = FetchRequest.FetchTopic
    part = topic.FetchPartition
    topic_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    request = FetchRequest[version](
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=1 << 20,
        topics=[
            topic(
                topic="events",
                topic_id=topic_id,
                partitions=[part(partition=0, fetch_offset=17, partition_max_bytes=4096)],
            )
        ],
    )
    client = Client()
    header, body = client.send(request)
    assert millis(body.max_wait) == 500
    (fetch_topic,) = body.topics
    if version >= 13:
        assert fetch_topic.topic_id == topic_id
    else:
        assert fetch_topic.topic == "events"
    (fetch_partition,) = fetch_topic.partitions
    assert (fetch_partition.partition, fetch_partition.fetch_offset) == (0, 17)

    records = memoryview(b"\x00\x01batch-bytes")
    result = FetchPartitionResult(0, 0, 20, 20, 5, records)
    name = topic_id if version >= 13 else "events"
    chunks = encode_fetch_response(header, 3, 0, 0, [(name, [result])])
    response = client.receive(b"".join(chunks))
    (topic_response,) = response.responses
    (p,) = topic_response.partitions
    assert (p.partition_index, p.error_code, p.high_watermark) == (0, 0, 20)
    assert bytes(p.records) == bytes(records)
    assert response.throttle_time_ms == 3


@pytest.mark.parametrize("version", range(5))
def test_api_versions_round_trip_with_kafka_python(version):
    client = Client()
    header, _body = client.send(ApiVersionsRequest[version]())
    response = client.receive(encode_response(header, api_versions_response(version)))
    assert response.error_code == 0
    assert {a.api_key: (a.min_version, a.max_version) for a in response.api_keys} == SUPPORTED_APIS


@pytest.mark.parametrize("version", [0, 4, 9, 12])
def test_metadata_round_trip_with_kafka_python(version):
    client = Client()
    request = MetadataRequest[version](
        topics=[MetadataRequest.MetadataRequestTopic(name="orders")],
        allow_auto_topic_creation=False,
    )
    header, body = client.send(request)
    assert [t.name for t in body.topics] == ["orders"]
    module = response_module(3, version)
    fields = module.MetadataResponse.__dataclass_fields__
    extra = {"throttle_time": 0} if "throttle_time" in fields else {}
    if "cluster_id" in fields:
        extra["cluster_id"] = "dari"
    if "controller_id" in fields:
        extra["controller_id"] = 1
    response = build(
        module.MetadataResponse,
        brokers=[build(module.MetadataResponseBroker, node_id=1, host="127.0.0.1", port=9092)],
        topics=[],
        **extra,
    )
    decoded = client.receive(encode_response(header, response))
    (broker,) = decoded.brokers
    assert (broker.node_id, broker.host, broker.port) == (1, "127.0.0.1", 9092)


def test_create_topics_request_from_kafka_python():
    topic = CreateTopicsRequest.CreatableTopic
    request = CreateTopicsRequest[7](
        topics=[
            topic(
                name="t1",
                num_partitions=3,
                replication_factor=1,
                assignments=[],
                configs=[topic.CreatableTopicConfig(name="cleanup.policy", value="compact")],
            )
        ],
        timeout_ms=2000,
        validate_only=False,
    )
    _, body = Client().send(request)
    (created,) = body.topics
    assert (created.name, created.num_partitions) == ("t1", 3)
    assert [(c.name, c.value) for c in created.configs] == [("cleanup.policy", "compact")]
    assert millis(body.timeout) == 2000
