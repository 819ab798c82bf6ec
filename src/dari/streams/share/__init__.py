"""Work off a log with per-record acknowledgement: Kafka share groups (KIP-932) and the
acquisition state AMQP queues over topics use too.

``partition.SharePartition`` is the ack-state machine of one (group, topic, partition);
``state_store`` journals it under ``.meta/share`` so it survives restarts.
"""
