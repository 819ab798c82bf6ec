"""The Kafka model: topics, partitions and the waits of long-polling fetches."""
