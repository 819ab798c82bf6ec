"""DefinitionsStore and the JSON form of field tables: the per-vhost definitions file keeps the
format existing data directories hold, round-trips every AMQP field value, and is replaced
atomically."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from dari.queues.definitions import (
    DefinitionsStore,
    QueueDefinition,
    VHostDefinitions,
    table_from_json,
    table_to_json,
)
from dari.queues.vhost import VirtualHost

# A file as the broker wrote it before definitions moved into their own module.
EXISTING = {
    "routing": {
        "version": 1,
        "vhost": "/",
        "exchanges": [
            {
                "name": "events",
                "type": "topic",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {"alternate-exchange": "spill"},
            }
        ],
        "bindings": [
            {
                "source": "events",
                "destination": "jobs",
                "destination_kind": "queue",
                "routing_key": "a.*",
                "arguments": {"k": {"$bytes": "AAE="}},
            }
        ],
    },
    "queues": [
        {"name": "jobs", "auto_delete": False, "arguments": {"x-max-length": 5}},
        {"name": "bare"},
    ],
}


def test_reads_a_file_in_the_existing_format(tmp_path: Path) -> None:
    store = DefinitionsStore(tmp_path)
    (tmp_path / "%2F.json").write_text(json.dumps(EXISTING))
    saved = store.load("/")
    assert saved is not None
    assert saved.queues == (
        QueueDefinition("jobs", False, {"x-max-length": 5}),
        QueueDefinition("bare", False, {}),
    )
    assert saved.routing == EXISTING["routing"]


def test_writes_the_same_format_it_reads(tmp_path: Path) -> None:
    store = DefinitionsStore(tmp_path / "meta")
    saved = store.load("/")
    assert saved is None
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "%2F.json").write_text(json.dumps(EXISTING))
    loaded = store.load("/")
    assert loaded is not None
    store.save("/", loaded)
    data = json.loads((tmp_path / "meta" / "%2F.json").read_text())
    assert data["routing"] == EXISTING["routing"]
    assert data["queues"] == [
        {"name": "jobs", "auto_delete": False, "arguments": {"x-max-length": 5}},
        {"name": "bare", "auto_delete": False, "arguments": {}},
    ]
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == ["%2F.json"]  # no temp


def test_save_creates_the_directory_and_replaces_the_file(tmp_path: Path) -> None:
    store = DefinitionsStore(tmp_path / "a" / "b")
    store.save("v", VHostDefinitions({"version": 1}, (QueueDefinition("one"),)))
    store.save("v", VHostDefinitions({"version": 1}, (QueueDefinition("two", True),)))
    loaded = store.load("v")
    assert loaded == VHostDefinitions({"version": 1}, (QueueDefinition("two", True, {}),))


def test_vhost_names_are_encoded_into_safe_file_names(tmp_path: Path) -> None:
    store = DefinitionsStore(tmp_path)
    assert store.path("/").name == "%2F.json"
    assert store.path("a/b c").name == "a%2Fb%20c.json"
    store.save("../x", VHostDefinitions())
    assert [p.name for p in tmp_path.iterdir()] == ["..%2Fx.json"]


def test_a_vhost_snapshot_round_trips_through_the_file(tmp_path: Path) -> None:
    vhost = VirtualHost("v")
    vhost.declare_exchange("x", "headers", durable=True, arguments={"alternate-exchange": b"ae"})
    vhost.add_queue(_Durable("q"))
    vhost.bind_queue("q", "x", "", {"x-match": "any", "n": 1})
    store = DefinitionsStore(tmp_path)
    store.save("v", VHostDefinitions(vhost.snapshot(), (QueueDefinition("q"),)))
    loaded = store.load("v")
    assert loaded is not None
    fresh = VirtualHost("v")
    fresh.add_queue(_Durable("q"))
    assert fresh.restore(loaded.routing) == []
    assert fresh.snapshot() == vhost.snapshot()


class _Durable:
    def __init__(self, name: str) -> None:
        self.name = name
        self.durable = True


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"s": "text", "i": -7, "f": 1.5, "b": True, "n": None},
        {"raw": b"\x00\xff", "nested": {"deeper": {"x": b"y"}}, "list": [1, "a", b"b", [2]]},
        {"d": Decimal("12.345"), "t": dt.datetime(2026, 12, 4, 20, 0, 0)},
    ],
)
def test_field_tables_round_trip_exactly(table: dict[str, object]) -> None:
    encoded = table_to_json(table)
    assert table_from_json(json.loads(json.dumps(encoded))) == table


def test_tagged_values_stay_distinct_from_plain_ones() -> None:
    assert table_to_json({"b": b"ab"}) == {"b": {"$bytes": "YWI="}}
    assert table_to_json({"t": {"k": 1}}) == {"t": {"$table": {"k": 1}}}
    assert table_from_json({"s": "$bytes"}) == {"s": "$bytes"}


def test_unknown_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot persist a field value of type object"):
        table_to_json({"o": object()})
    with pytest.raises(ValueError, match="unknown tagged value"):
        table_from_json({"x": {"$what": 1}})
