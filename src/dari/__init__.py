"""dari: one broker that speaks both AMQP 0-9-1 and the Kafka protocol on one log engine."""

__version__ = "0.1.0"
