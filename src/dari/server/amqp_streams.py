"""The topics AMQP stream queues live on: ``queues.stream_queue.StreamTopics`` over the Kafka
side's ``TopicManager``.

The queues domain does not import the Kafka model; this adapter is where the two meet. It is
the one place that turns the topic catalogue's refusals into an AMQP 406.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dari.queues.errors import PreconditionFailed
from dari.streams.errors import StreamsError
from dari.streams.partition import Partition
from dari.streams.topics import TopicManager


class TopicStreams:
    """Opens and deletes the one-partition topics of stream queues; owned by the broker
    process (event loop thread), like the ``TopicManager`` it wraps."""

    def __init__(self, topics: TopicManager) -> None:
        self.topics = topics

    def open(self, name: str, configs: Mapping[str, str]) -> Partition:
        """The partition of topic ``name``, made with ``configs`` unless it exists (a topic
        Kafka clients made is opened as it is, if it has one partition)."""
        topic = self.topics.get(name)
        if topic is None:
            try:
                topic = self.topics.create(name, 1, configs)
            except StreamsError as exc:
                raise PreconditionFailed(
                    f"cannot declare stream on topic '{name}': {exc}"
                ) from None
        if len(topic.partitions) != 1:  # a stream is one ordered log
            raise PreconditionFailed(
                f"cannot declare stream on topic '{name}': it has {len(topic.partitions)} "
                "partitions, a stream queue needs exactly one"
            )
        partition = topic.partition(0)
        assert partition is not None
        return partition

    def delete(self, name: str) -> None:
        if self.topics.get(name) is not None:
            self.topics.delete(name)

    def on_delete(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` whenever a topic is deleted, by a Kafka client too."""
        self.topics.deletion_listeners.append(listener)
