"""Broker settings: embedded defaults < TOML file < ``DARI_*`` environment < command-line flags.

Keys are dotted names. Broker-wide log settings use Kafka's own names (``num.partitions``,
``log.retention.ms``, ...) so that what users know from Kafka works here unchanged. Nested TOML
tables flatten to the same dotted names, so ``[log] retention.ms = 1000`` and
``"log.retention.ms" = 1000`` mean the same.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dari.queues.permissions import PermissionsError, user_permissions

DEFAULTS: dict[str, Any] = {
    "data.dir": "./dari-data",
    "kafka": "127.0.0.1:9092",
    "kafka.advertised": "",
    "log.level": "info",
    "amqp": "127.0.0.1:5672",
    "amqp.heartbeat": 60,
    "amqp.frame.max": 131072,
    "amqp.channel.max": 2047,
    "amqp.vhosts": "/",
    "amqp.default.user": "guest",
    "amqp.default.pass": "guest",
    "amqp.loopback.users": "guest",
    # resource alarms (RabbitMQ's vm_memory_high_watermark and disk_free_limit): while one is
    # active, AMQP connections that publish are blocked; re-read on SIGHUP
    # ready message bytes a queue holds in memory; beyond, messages stay on disk and are read
    # back in order as consumers reach them (0: everything in memory). Large enough that
    # bursts stay in memory (paging costs throughput); small enough that a backlog of
    # millions does not take the machine's memory.
    "amqp.queue.memory.bytes": 128 << 20,
    "amqp.memory.high.watermark": 0.6,
    "amqp.memory.high.watermark.bytes": 0,
    "disk.free.limit": 50_000_000,
    "node.id": 0,
    "cluster.id": "",
    "num.partitions": 1,
    "default.replication.factor": 1,
    "auto.create.topics.enable": True,
    "message.max.bytes": 1048588,
    "socket.request.max.bytes": 104857600,
    "log.segment.bytes": 1 << 30,
    "log.roll.ms": 7 * 24 * 3600 * 1000,
    "log.retention.ms": 7 * 24 * 3600 * 1000,
    "log.retention.bytes": -1,
    "log.retention.check.interval.ms": 300_000,
    "log.index.interval.bytes": 4096,
    "log.flush.policy": "os",
    "log.cleaner.backoff.ms": 15_000,
    "log.flush.interval.ms": 1000,
    "log.message.timestamp.type": "CreateTime",
    # consumer groups and __consumer_offsets (Kafka's names and defaults)
    "group.initial.rebalance.delay.ms": 3000,
    "group.min.session.timeout.ms": 6000,
    "group.max.session.timeout.ms": 1_800_000,
    "offsets.topic.num.partitions": 50,
    "offsets.topic.segment.bytes": 100 * 1024 * 1024,
    "offsets.retention.minutes": 10080,
    "offsets.retention.check.interval.ms": 600_000,
    "offset.metadata.max.bytes": 4096,
    # share groups (KIP-932; Kafka's names and defaults); group configs are checked against
    # the min/max bounds
    "group.share.session.timeout.ms": 45_000,
    "group.share.min.session.timeout.ms": 45_000,
    "group.share.max.session.timeout.ms": 60_000,
    "group.share.heartbeat.interval.ms": 5000,
    "group.share.min.heartbeat.interval.ms": 5000,
    "group.share.max.heartbeat.interval.ms": 15_000,
    "group.share.record.lock.duration.ms": 30_000,
    "group.share.min.record.lock.duration.ms": 15_000,
    "group.share.max.record.lock.duration.ms": 60_000,
    "group.share.delivery.count.limit": 5,
    "group.share.min.delivery.count.limit": 2,
    "group.share.max.delivery.count.limit": 10,
    "group.share.partition.max.record.locks": 2000,
    "group.share.min.partition.max.record.locks": 100,
    "group.share.max.partition.max.record.locks": 10_000,
}

_ENV_PREFIX = "DARI_"
USERS_PREFIX = "users."


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong kind; the message names it."""


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        # a user's permissions table stays whole: its keys are vhost names, which may hold dots
        whole = key == "permissions" and prefix.startswith(USERS_PREFIX) and prefix != USERS_PREFIX
        if isinstance(value, Mapping) and not whole:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _coerce(key: str, value: Any) -> Any:
    """Give ``value`` the type of the default for ``key`` (env and flags arrive as text)."""
    default = DEFAULTS[key]
    try:
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return lowered in {"true", "1", "yes"}
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        return str(value)
    except ValueError:
        kind = type(default).__name__
        raise ConfigError(f"setting {key!r} expects a {kind}, got {value!r}") from None


def _env_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``DARI_LOG_RETENTION_MS=5`` -> ``log.retention.ms``; unknown names are ignored."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(_ENV_PREFIX) or name == "DARI_CONFIG":
            continue
        key = name[len(_ENV_PREFIX) :].lower().replace("_", ".")
        if key in DEFAULTS:
            out[key] = value
    return out


@dataclass
class Settings:
    """Resolved settings; ``values`` holds every key of DEFAULTS with its final typed value."""

    values: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    # (config file, overrides, environ) as given to load(), for reload()
    sources: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data.dir"])

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        environ = os.environ if environ is None else environ
        layers: list[Mapping[str, Any]] = []
        config_file = config_file or environ.get("DARI_CONFIG")
        if config_file:
            path = Path(config_file)
            try:
                layers.append(_flatten(tomllib.loads(path.read_text())))
            except FileNotFoundError:
                raise ConfigError(f"config file {path} does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        layers.append(_env_settings(environ))
        layers.append({k: v for k, v in (overrides or {}).items() if v is not None})
        values = dict(DEFAULTS)
        for layer in layers:
            for key, value in layer.items():
                if key.startswith(USERS_PREFIX):
                    values[key] = value  # [users.NAME] tables: password, vhosts
                    continue
                if key not in DEFAULTS:
                    raise ConfigError(f"unknown setting {key!r}")
                values[key] = _coerce(key, value)
        settings = cls(values, (config_file, overrides, environ))
        settings.validate()
        return settings

    def reload(self) -> Settings:
        """The same sources read again (on SIGHUP): the config file may have changed."""
        return Settings.load(*self.sources) if self.sources else self

    def validate(self) -> None:
        policy = self.values["log.flush.policy"]
        if policy not in {"always", "interval", "os"}:
            raise ConfigError(f"log.flush.policy must be always, interval or os, not {policy!r}")
        if self.values["log.message.timestamp.type"] not in {"CreateTime", "LogAppendTime"}:
            raise ConfigError("log.message.timestamp.type must be CreateTime or LogAppendTime")
        if self.values["num.partitions"] < 1:
            raise ConfigError("num.partitions must be at least 1")
        if not 0.0 <= self.values["amqp.memory.high.watermark"] <= 1.0:
            raise ConfigError("amqp.memory.high.watermark must be a fraction from 0 to 1")
        for key in (
            "amqp.memory.high.watermark.bytes", "disk.free.limit", "amqp.queue.memory.bytes",
        ):
            if self.values[key] < 0:
                raise ConfigError(f"{key} must not be negative")
        parse_hostport(self.values["kafka"])
        parse_hostport(self.values["amqp"])
        for name, attrs in self.users().items():
            try:
                user_permissions(attrs)
            except PermissionsError as exc:
                raise ConfigError(f"user {name!r}: {exc}") from None

    def users(self) -> dict[str, dict[str, Any]]:
        """``[users.NAME]`` tables: ``{"alice": {"password": ..., "vhosts": [...]}}``, plus a
        ``permissions`` table (vhost -> configure/write/read patterns) when given."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.values.items():
            if key.startswith(USERS_PREFIX):
                name, _, attr = key[len(USERS_PREFIX) :].rpartition(".")
                out.setdefault(name, {})[attr] = value
        return out


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9092"`` -> (host, port); ``"[::1]:9092"`` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listener address {text!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)
