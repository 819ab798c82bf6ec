"""Kafka's catalogue of topic configs and the checks its broker applies to their values.

Names, types, defaults and bounds follow Kafka's ``LogConfig`` (plus dari's ``flush.policy``);
refusals carry Kafka's wording ("Unknown topic config name: x", "Invalid value v for
configuration x: ...") so every path that accepts topic configs (CreateTopics, AlterConfigs,
IncrementalAlterConfigs) answers a bad one the same way. ``broker`` names the broker config
that supplies a topic config's default, which DescribeConfigs reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from dari.streams.errors import InvalidConfigError

_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_LONG_MAX = str(_INT64[1])


class ConfigType(IntEnum):
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7


def _invalid(name: str, value: str, reason: str) -> InvalidConfigError:
    return InvalidConfigError(f"Invalid value {value} for configuration {name}: {reason}")


@dataclass(frozen=True, slots=True)
class TopicConfigKey:
    """One topic config as Kafka defines it; ``broker`` names the broker config (a dari
    setting when dari has one) that supplies the default."""

    name: str
    type: ConfigType
    default: str
    doc: str
    broker: str | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: str) -> str:
        """The value if valid for this config, else raise InvalidConfigError."""
        text = value.strip()
        if self.type in (ConfigType.INT, ConfigType.LONG, ConfigType.SHORT):
            bounds = _INT32 if self.type is ConfigType.INT else _INT64
            try:
                number: float = int(text)
            except ValueError:
                raise _invalid(self.name, value, f"Not a number of type {self.type.name}") from None
            if not bounds[0] <= number <= bounds[1]:
                raise _invalid(self.name, value, f"Not a number of type {self.type.name}")
            self._check_range(value, number)
        elif self.type is ConfigType.DOUBLE:
            try:
                number = float(text)
            except ValueError:
                raise _invalid(self.name, value, "Not a number of type DOUBLE") from None
            if math.isnan(number):
                raise _invalid(self.name, value, "Not a number of type DOUBLE")
            self._check_range(value, number)
        elif self.type is ConfigType.BOOLEAN:
            if text.lower() not in ("true", "false"):
                raise _invalid(self.name, value, "Expected value to be either true or false")
        elif self.type is ConfigType.LIST:
            # Kafka checks a list item by item and names the first bad one.
            items = split_list(text)
            bad = [item for item in items if self.choices and item not in self.choices]
            if bad or (self.choices and not items):
                raise _invalid(
                    self.name,
                    bad[0] if bad else value,
                    f"String must be one of: {', '.join(self.choices)}",
                )
        elif self.choices and text not in self.choices:
            raise _invalid(self.name, value, f"String must be one of: {', '.join(self.choices)}")
        return text

    def _check_range(self, value: str, number: float) -> None:
        if self.low is not None and number < self.low:
            raise _invalid(self.name, value, f"Value must be at least {_num(self.low)}")
        if self.high is not None and number > self.high:
            raise _invalid(self.name, value, f"Value must be no more than {_num(self.high)}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_L, _I, _S, _B, _D, _LIST = (
    ConfigType.LONG,
    ConfigType.INT,
    ConfigType.STRING,
    ConfigType.BOOLEAN,
    ConfigType.DOUBLE,
    ConfigType.LIST,
)
_COMPRESSION = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")

TOPIC_CONFIGS: dict[str, TopicConfigKey] = {
    key.name: key
    for key in (
        TopicConfigKey(
            "cleanup.policy", _LIST, "delete",
            "delete: drop old segments by time or size; compact: keep the latest record per key.",
            "log.cleanup.policy", choices=("compact", "delete"),
        ),
        TopicConfigKey(
            "compression.type", _S, "producer",
            "Codec of stored batches; producer keeps whatever the producer sent.",
            "compression.type", choices=_COMPRESSION,
        ),
        TopicConfigKey(
            "compression.gzip.level", _I, "-1", "Level used when the broker writes gzip.",
            "compression.gzip.level", low=-1, high=9,
        ),
        TopicConfigKey(
            "compression.lz4.level", _I, "9", "Level used when the broker writes lz4.",
            "compression.lz4.level", low=1, high=17,
        ),
        TopicConfigKey(
            "compression.zstd.level", _I, "3", "Level used when the broker writes zstd.",
            "compression.zstd.level", low=-131072, high=22,
        ),
        TopicConfigKey(
            "delete.retention.ms", _L, "86400000",
            "How long tombstones stay readable in a compacted topic.",
            "log.cleaner.delete.retention.ms", low=0,
        ),
        TopicConfigKey(
            "file.delete.delay.ms", _L, "60000",
            "Delay before deleted segment files are removed from disk.",
            "log.segment.delete.delay.ms", low=0,
        ),
        TopicConfigKey(
            "flush.messages", _L, _LONG_MAX,
            "1 fsyncs every append before acknowledging it (dari's flush.policy=always).",
            "log.flush.interval.messages", low=1,
        ),
        TopicConfigKey(
            "flush.ms", _L, _LONG_MAX,
            "fsync interval of flush.policy=interval; setting it selects that policy.",
            "log.flush.interval.ms", low=0,
        ),
        TopicConfigKey(
            "flush.policy", _S, "os",
            "dari's fsync policy: always (before acknowledging), interval, or os (page cache).",
            "log.flush.policy", choices=("always", "interval", "os"),
        ),
        TopicConfigKey(
            "follower.replication.throttled.replicas", _LIST, "",
            "Replicas whose follower replication is throttled (no effect on one broker).",
        ),
        TopicConfigKey(
            "index.interval.bytes", _I, "4096",
            "Bytes of batches between two entries of the sparse offset index.",
            "log.index.interval.bytes", low=0,
        ),
        TopicConfigKey(
            "leader.replication.throttled.replicas", _LIST, "",
            "Replicas whose leader replication is throttled (no effect on one broker).",
        ),
        TopicConfigKey(
            "local.retention.bytes", _L, "-2", "Local retention size with tiered storage.",
            "log.local.retention.bytes", low=-2,
        ),
        TopicConfigKey(
            "local.retention.ms", _L, "-2", "Local retention time with tiered storage.",
            "log.local.retention.ms", low=-2,
        ),
        TopicConfigKey(
            "max.compaction.lag.ms", _L, _LONG_MAX,
            "Longest time a record may stay uncompacted.",
            "log.cleaner.max.compaction.lag.ms", low=1,
        ),
        TopicConfigKey(
            "max.message.bytes", _I, "1048588",
            "Largest record batch the topic accepts.", "message.max.bytes", low=0,
        ),
        TopicConfigKey(
            "message.downconversion.enable", _B, "true",
            "Whether old fetch versions may get down-converted batches.",
            "log.message.downconversion.enable",
        ),
        TopicConfigKey(
            "message.timestamp.after.max.ms", _L, _LONG_MAX,
            "How far in the future a CreateTime timestamp may be.",
            "log.message.timestamp.after.max.ms", low=0,
        ),
        TopicConfigKey(
            "message.timestamp.before.max.ms", _L, _LONG_MAX,
            "How far in the past a CreateTime timestamp may be.",
            "log.message.timestamp.before.max.ms", low=0,
        ),
        TopicConfigKey(
            "message.timestamp.difference.max.ms", _L, _LONG_MAX,
            "Deprecated: largest difference between a CreateTime timestamp and the broker's.",
            "log.message.timestamp.difference.max.ms", low=0,
        ),
        TopicConfigKey(
            "message.timestamp.type", _S, "CreateTime",
            "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's.",
            "log.message.timestamp.type", choices=("CreateTime", "LogAppendTime"),
        ),
        TopicConfigKey(
            "min.cleanable.dirty.ratio", _D, "0.5",
            "Share of uncompacted log that triggers compaction.",
            "log.cleaner.min.cleanable.ratio", low=0, high=1,
        ),
        TopicConfigKey(
            "min.compaction.lag.ms", _L, "0",
            "Shortest time a record stays uncompacted.",
            "log.cleaner.min.compaction.lag.ms", low=0,
        ),
        TopicConfigKey(
            "min.insync.replicas", _I, "1",
            "Replicas that must acknowledge acks=all writes (one broker: 1).",
            "min.insync.replicas", low=1,
        ),
        TopicConfigKey(
            "preallocate", _B, "false", "Whether segment files are preallocated.",
            "log.preallocate",
        ),
        TopicConfigKey(
            "remote.storage.enable", _B, "false", "Tiered storage (not available in dari).",
        ),
        TopicConfigKey(
            "retention.bytes", _L, "-1",
            "Largest size of a partition before old segments are deleted; -1: no limit.",
            "log.retention.bytes", low=-1,
        ),
        TopicConfigKey(
            "retention.ms", _L, "604800000",
            "Age after which closed segments are deleted; -1: no limit.",
            "log.retention.ms", low=-1,
        ),
        TopicConfigKey(
            "segment.bytes", _I, "1073741824",
            "Size at which the active segment is rolled.", "log.segment.bytes", low=14,
        ),
        TopicConfigKey(
            "segment.index.bytes", _I, "10485760", "Largest size of a segment's index.",
            "log.index.size.max.bytes", low=4,
        ),
        TopicConfigKey(
            "segment.jitter.ms", _L, "0", "Random jitter subtracted from segment.ms.",
            "log.roll.jitter.ms", low=0,
        ),
        TopicConfigKey(
            "segment.ms", _L, "604800000", "Age at which the active segment is rolled.",
            "log.roll.ms", low=1,
        ),
        TopicConfigKey(
            "unclean.leader.election.enable", _B, "false",
            "Whether an out-of-sync replica may become leader (no effect on one broker).",
            "unclean.leader.election.enable",
        ),
    )
}


def config_key(name: str) -> TopicConfigKey:
    """The catalogue entry of a topic config, else raise InvalidConfigError."""
    key = TOPIC_CONFIGS.get(name)
    if key is None:
        raise InvalidConfigError(f"Unknown topic config name: {name}")
    return key


def check_topic_configs(
    configs: Mapping[str, str | None], current: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Validate topic config overrides as Kafka does, in order: nulls, names, then values.

    Returns the values as the broker applies them (trimmed). Entries equal to ``current``
    (the topic's stored overrides) are taken as they are, so a topic keeps overrides it was
    given before this catalogue checked them.
    """
    nulls = [name for name, value in configs.items() if value is None]
    if nulls:
        raise InvalidConfigError(f"Null value not supported for topic configs: {','.join(nulls)}")
    known = current or {}
    changed = {
        name: value
        for name, value in configs.items()
        if value is not None and known.get(name) != value
    }
    for name in changed:
        config_key(name)
    return {
        name: TOPIC_CONFIGS[name].check(value) if name in changed else value
        for name, value in configs.items()
        if value is not None
    }
