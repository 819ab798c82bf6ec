"""Durable AMQP definitions on disk: one JSON file per vhost under ``<data-dir>/.meta/amqp/``.

A file holds what a restart must recreate: the vhost's durable exchanges and the bindings
between durable ends (``routing``, the output of ``VirtualHost.snapshot()``) and its durable
queue declarations (``queues``). Messages are not here: a durable queue's messages live in its
own queue store. The file is replaced atomically and fsynced on every change, so a crash leaves
either the old or the new definitions, never a torn file. The format::

    {"routing": {"version": 1, "vhost": "/", "exchanges": [...], "bindings": [...]},
     "queues": [{"name": "q", "auto_delete": false, "arguments": {...}}, ...]}

Argument tables are stored with ``table_to_json``: AMQP field values JSON cannot hold (bytes,
nested tables, decimals, timestamps) are tagged so that ``table_from_json`` gives them back
exactly, which matters because redeclare-equivalence compares the recovered arguments.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dari.storage.files import atomic_write


@dataclass(frozen=True, slots=True)
class QueueDefinition:
    """A durable queue declaration as a restart replays it."""

    name: str
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VHostDefinitions:
    """The durable definitions of one vhost: routing snapshot and queue declarations."""

    routing: Mapping[str, Any] = field(default_factory=dict)
    queues: tuple[QueueDefinition, ...] = ()


class DefinitionsStore:
    """The definitions files of every vhost in one directory (``<data-dir>/.meta/amqp``).

    Owned by the broker; calls are synchronous file I/O (``save`` fsyncs), made from the event
    loop on each durable change, as before. Not safe across threads.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, vhost: str) -> Path:
        """Vhost names may hold any character: they are percent-encoded into the file name."""
        return self.directory / f"{quote(vhost, safe='')}.json"

    def load(self, vhost: str) -> VHostDefinitions | None:
        """The vhost's saved definitions, or None if it never saved any."""
        path = self.path(vhost)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return VHostDefinitions(
            routing=data.get("routing", {}),
            queues=tuple(
                QueueDefinition(
                    item["name"],
                    auto_delete=item.get("auto_delete", False),
                    arguments=table_from_json(item.get("arguments", {})),
                )
                for item in data.get("queues", [])
            ),
        )

    def save(self, vhost: str, definitions: VHostDefinitions) -> None:
        """Replace the vhost's file (atomic and durable on return)."""
        data = {
            "routing": definitions.routing,
            "queues": [
                {
                    "name": q.name,
                    "auto_delete": q.auto_delete,
                    "arguments": table_to_json(q.arguments),
                }
                for q in definitions.queues
            ],
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(vhost), json.dumps(data), fsync=True)


# ---------------------------------------------------------------------- JSON for field tables


def table_to_json(table: Mapping[str, Any]) -> dict[str, Any]:
    """A field table as JSON-able data; non-JSON values are tagged so they decode exactly."""
    return {str(k): _to_json(v) for k, v in table.items()}


def table_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The field table ``table_to_json`` wrote."""
    return {k: _from_json(v) for k, v in data.items()}


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"$table": table_to_json(value)}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, _dt.datetime):
        return {"$timestamp": value.isoformat()}
    raise TypeError(f"cannot persist a field value of type {type(value).__name__}")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        if tag == "$bytes":
            return base64.b64decode(inner)
        if tag == "$table":
            return table_from_json(inner)
        if tag == "$decimal":
            return Decimal(inner)
        if tag == "$timestamp":
            return _dt.datetime.fromisoformat(inner)
        raise ValueError(f"unknown tagged value {tag!r}")
    return value
