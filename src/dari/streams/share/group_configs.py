"""Per-group configuration (Kafka's resource type GROUP) of share groups.

Kafka lets ``kafka-configs --entity-type groups`` set a few keys per group; the share ones
decide where a new share partition starts (``share.auto.offset.reset``), how long a record
stays locked (``share.record.lock.duration.ms``), how often it may be delivered
(``share.delivery.count.limit``) and how many records may be in flight
(``share.partition.max.record.locks``). Values are checked against the broker-wide bounds as
Kafka does (``group.share.min/max.*``). Overrides are kept in one JSON file replaced with
``atomic_write``; defaults come from the broker settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dari.storage import atomic_write
from dari.streams.errors import InvalidConfigError

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class GroupConfigKey:
    """One group config: its type name for DescribeConfigs, its default, its check."""

    name: str
    type: str  # "string" | "int"
    default: Callable[[Mapping[str, object]], str]
    check: Callable[[str, Mapping[str, object]], str]
    doc: str


def by_duration_ms(value: str) -> int | None:
    """The milliseconds of ``by_duration:PnDTnHnMn.nS``, or None if malformed."""
    if not value.startswith("by_duration:"):
        return None
    match = _DURATION.match(value[len("by_duration:") :])
    if match is None or match.group(0) in ("P", "PT"):
        return None
    days, hours, minutes = (int(match[g] or 0) for g in ("d", "h", "m"))
    seconds = float(match["s"] or 0)
    return int((((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1000)


def _reset(value: str, _bounds: Mapping[str, object]) -> str:
    if value in ("latest", "earliest") or by_duration_ms(value) is not None:
        return value
    raise InvalidConfigError(
        f"Invalid value {value} for configuration share.auto.offset.reset: String must be "
        "one of (case insensitive): LATEST, EARLIEST, BY_DURATION"
    )


def _isolation(value: str, _bounds: Mapping[str, object]) -> str:
    if value in ("read_committed", "read_uncommitted"):
        return value
    raise InvalidConfigError(
        f"Invalid value {value} for configuration share.isolation.level: String must be one "
        "of: read_committed, read_uncommitted"
    )


def _int_between(name: str, low_key: str, high_key: str) -> Callable[..., str]:
    def check(value: str, bounds: Mapping[str, object]) -> str:
        try:
            number = int(value)
        except ValueError:
            raise InvalidConfigError(
                f"Invalid value {value} for configuration {name}: Not a number of type INT"
            ) from None
        low, high = int(bounds[low_key]), int(bounds[high_key])  # type: ignore[call-overload]
        if number < low:
            raise InvalidConfigError(f"{name} must be greater than or equal to {low_key} {low}")
        if number > high:
            raise InvalidConfigError(f"{name} must be less than or equal to {high_key} {high}")
        return str(number)

    return check


def _setting(key: str) -> Callable[[Mapping[str, object]], str]:
    return lambda settings: str(settings[key])


GROUP_CONFIGS: dict[str, GroupConfigKey] = {
    k.name: k
    for k in (
        GroupConfigKey(
            "share.auto.offset.reset",
            "string",
            lambda _s: "latest",
            _reset,
            "The strategy to initialize the share-partition start offset.",
        ),
        GroupConfigKey(
            "share.isolation.level",
            "string",
            lambda _s: "read_uncommitted",
            _isolation,
            "Controls how to read records written transactionally.",
        ),
        GroupConfigKey(
            "share.record.lock.duration.ms",
            "int",
            _setting("group.share.record.lock.duration.ms"),
            _int_between(
                "share.record.lock.duration.ms",
                "group.share.min.record.lock.duration.ms",
                "group.share.max.record.lock.duration.ms",
            ),
            "The record acquisition lock duration in milliseconds for share groups.",
        ),
        GroupConfigKey(
            "share.session.timeout.ms",
            "int",
            _setting("group.share.session.timeout.ms"),
            _int_between(
                "share.session.timeout.ms",
                "group.share.min.session.timeout.ms",
                "group.share.max.session.timeout.ms",
            ),
            "The timeout to detect client failures when using the share group protocol.",
        ),
        GroupConfigKey(
            "share.heartbeat.interval.ms",
            "int",
            _setting("group.share.heartbeat.interval.ms"),
            _int_between(
                "share.heartbeat.interval.ms",
                "group.share.min.heartbeat.interval.ms",
                "group.share.max.heartbeat.interval.ms",
            ),
            "The heartbeat interval given to the members of a share group.",
        ),
        GroupConfigKey(
            "share.delivery.count.limit",
            "int",
            _setting("group.share.delivery.count.limit"),
            _int_between(
                "share.delivery.count.limit",
                "group.share.min.delivery.count.limit",
                "group.share.max.delivery.count.limit",
            ),
            "The maximum number of delivery attempts for a record delivered to a share group.",
        ),
        GroupConfigKey(
            "share.partition.max.record.locks",
            "int",
            _setting("group.share.partition.max.record.locks"),
            _int_between(
                "share.partition.max.record.locks",
                "group.share.min.partition.max.record.locks",
                "group.share.max.partition.max.record.locks",
            ),
            "Share-group record lock limit per share-partition.",
        ),
    )
}


class GroupConfigs:
    """The config overrides of every group, with the broker settings as defaults.

    Owned by the broker on the event loop thread; not thread-safe. ``path`` is replaced
    atomically on every change.
    """

    def __init__(self, path: Path, settings: Mapping[str, object]) -> None:
        self.path = path
        self.settings = settings
        self._overrides: dict[str, dict[str, str]] = {}
        if path.exists():
            loaded = json.loads(path.read_text())
            self._overrides = {g: dict(v) for g, v in loaded.items()}

    def overrides(self, group_id: str) -> dict[str, str]:
        return dict(self._overrides.get(group_id, {}))

    def value(self, group_id: str, name: str) -> str:
        found = self._overrides.get(group_id, {}).get(name)
        return found if found is not None else GROUP_CONFIGS[name].default(self.settings)

    def int_value(self, group_id: str, name: str) -> int:
        return int(self.value(group_id, name))

    def check(self, name: str, value: str) -> str:
        key = GROUP_CONFIGS.get(name)
        if key is None:
            raise InvalidConfigError(f"Unknown group config name: {name}")
        return key.check(value, self.settings)

    def replace(self, group_id: str, configs: dict[str, str], validate_only: bool) -> None:
        """Make ``configs`` the overrides of ``group_id`` (each checked first)."""
        checked = {name: self.check(name, value) for name, value in configs.items()}
        if validate_only:
            return
        if checked:
            self._overrides[group_id] = checked
        else:
            self._overrides.pop(group_id, None)
        self._save()

    def forget(self, group_id: str) -> None:
        if self._overrides.pop(group_id, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self._overrides, sort_keys=True))
