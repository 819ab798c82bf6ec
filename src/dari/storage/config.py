"""Per-log storage settings, named after Kafka's topic configs so topics can set them directly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

FLUSH_POLICIES = ("always", "interval", "os")
CLEANUP_POLICIES = ("compact", "delete")
_INT32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1


def _int_in(low: int, high: int = _INT64_MAX) -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return parse


def _timestamp_type(name: str, text: str) -> bool:
    if text == "LogAppendTime":
        return True
    if text == "CreateTime":
        return False
    raise ValueError(f"{name} must be CreateTime or LogAppendTime, got {text!r}")


def _ratio(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def _cleanup_policy(name: str, text: str) -> str:
    """Accept "delete", "compact" or both in either order; normalise to "compact,delete"."""
    parts = {part.strip() for part in text.split(",")}
    if not parts or not parts <= set(CLEANUP_POLICIES) or "" in parts:
        choices = ", ".join(CLEANUP_POLICIES)
        raise ValueError(f"{name} must be a list of {choices}, got {text!r}")
    return ",".join(sorted(parts))


def _flush_policy(name: str, text: str) -> str:
    if text not in FLUSH_POLICIES:
        raise ValueError(f"{name} must be one of {', '.join(FLUSH_POLICIES)}, got {text!r}")
    return text


# Kafka config name -> (LogConfig field, parser). "flush.policy" is dari's own name for the
# fsync policy; Kafka's flush.messages / flush.ms are translated in from_topic_configs.
_KNOWN: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "segment.bytes": ("segment_bytes", _int_in(14, _INT32_MAX)),
    "segment.ms": ("segment_ms", _int_in(1)),
    "retention.ms": ("retention_ms", _int_in(-1)),
    "retention.bytes": ("retention_bytes", _int_in(-1)),
    "index.interval.bytes": ("index_interval_bytes", _int_in(0, _INT32_MAX)),
    "flush.policy": ("flush", _flush_policy),
    "flush.ms": ("flush_interval_ms", _int_in(0)),
    "message.timestamp.type": ("log_append_time", _timestamp_type),
    "max.message.bytes": ("max_message_bytes", _int_in(0, _INT32_MAX)),
    "cleanup.policy": ("cleanup_policy", _cleanup_policy),
    "delete.retention.ms": ("delete_retention_ms", _int_in(0)),
    "min.cleanable.dirty.ratio": ("min_cleanable_dirty_ratio", _ratio),
    "min.compaction.lag.ms": ("min_compaction_lag_ms", _int_in(0)),
    "max.compaction.lag.ms": ("max_compaction_lag_ms", _int_in(1)),
}


@dataclass
class LogConfig:
    """Settings of one partition log; replaceable at runtime (takes effect on the next roll,
    retention pass or flush decision).

    ``flush``: "always" fsyncs before an append is acknowledged (group-committed by
    ``FlushScheduler``), "interval" every ``flush_interval_ms``, "os" leaves it to the page cache
    (Kafka's default) and fsyncs only rolled segments and on close.

    ``cleanup_policy`` is "delete" (retention by time and size), "compact" (the log cleaner
    keeps the newest record per key, see ``dari.storage.compaction``) or "compact,delete".
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600_000
    retention_ms: int = 7 * 24 * 3600_000
    retention_bytes: int = -1
    index_interval_bytes: int = 4096
    flush: str = "os"
    flush_interval_ms: int = 1000
    log_append_time: bool = False
    max_message_bytes: int = 1048588
    cleanup_policy: str = "delete"
    delete_retention_ms: int = 24 * 3600_000
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _INT64_MAX
    # Every topic config given by name, known or not, so DescribeConfigs can echo it back.
    topic_configs: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.flush not in FLUSH_POLICIES:
            choices = ", ".join(FLUSH_POLICIES)
            raise ValueError(f"flush must be one of {choices}, got {self.flush!r}")
        self.cleanup_policy = _cleanup_policy("cleanup_policy", self.cleanup_policy)
        _ratio("min_cleanable_dirty_ratio", str(self.min_cleanable_dirty_ratio))

    @property
    def compact(self) -> bool:
        """The log cleaner compacts this log."""
        return "compact" in self.cleanup_policy.split(",")

    @property
    def delete(self) -> bool:
        """Retention by time and size applies (the log start offset always does)."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def roll_ms(self) -> int:
        """Age at which the active segment rolls: segment.ms, or max.compaction.lag.ms when
        compacting and smaller (the cleaner never touches the active segment; Kafka's
        maxSegmentMs)."""
        if self.compact:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms

    @classmethod
    def from_topic_configs(
        cls, configs: Mapping[str, str], defaults: LogConfig | None = None
    ) -> LogConfig:
        """Apply Kafka-named ``configs`` on top of ``defaults``.

        Bad values raise ValueError naming the config; unknown names are kept in
        ``topic_configs`` and otherwise ignored. ``flush.messages=1`` means fsync every append
        ("always"); an explicit ``flush.ms`` below Kafka's "never" value selects "interval"
        unless ``flush.policy`` says otherwise.
        """
        base = defaults if defaults is not None else cls()
        changes: dict[str, object] = {}
        for name, text in configs.items():
            if name in _KNOWN:
                attr, parse = _KNOWN[name]
                changes[attr] = parse(name, str(text))
        if "flush.policy" not in configs:
            if "flush.messages" in configs:
                messages = _int_in(1)("flush.messages", str(configs["flush.messages"]))
                if messages == 1:
                    changes["flush"] = "always"
            interval = changes.get("flush_interval_ms", _INT64_MAX)
            if changes.get("flush") != "always" and interval != _INT64_MAX:
                changes["flush"] = "interval"
        merged = {**base.topic_configs, **{k: str(v) for k, v in configs.items()}}
        return replace(base, **changes, topic_configs=merged)

    def to_topic_configs(self) -> dict[str, str]:
        """Kafka names and string values of every known setting (plus any kept unknown ones)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        out = dict(self.topic_configs)
        for name, (attr, _) in _KNOWN.items():
            value = values[attr]
            if attr == "log_append_time":
                out[name] = "LogAppendTime" if value else "CreateTime"
            else:
                out[name] = str(value)
        return out
