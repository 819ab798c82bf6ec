"""Domain errors of the streams model; each protocol maps them to its own error codes."""


class StreamsError(Exception):
    """Root of the errors a client's request can cause in the streams domain."""


class UnknownTopicError(StreamsError):
    pass


class TopicExistsError(StreamsError):
    pass


class InvalidTopicError(StreamsError):
    pass


class InvalidPartitionsError(StreamsError):
    pass


class InvalidConfigError(StreamsError):
    pass


class InvalidReplicationFactorError(StreamsError):
    pass
