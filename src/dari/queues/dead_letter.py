"""Dead-lettering a message as RabbitMQ 3.10 classic queues do: the ``x-death`` history.

``record_death`` rewrites a message's properties the way ``rabbit_dead_letter:make_msg`` does,
because consumers of dead-letter queues (retry counters in Celery, Spring, MassTransit…) read
these headers and compare them with what RabbitMQ wrote:

* ``x-death`` holds one table per (queue, reason): ``count`` (long), ``reason``, ``queue``,
  ``time`` (timestamp, seconds), ``exchange``, ``routing-keys`` (the publish routing key plus
  the ``CC`` header's keys) and ``original-expiration`` when the message had a per-message
  TTL, which is then removed from the properties. The newest death comes first. A repeated
  (queue, reason) has its old table's count incremented (its other fields are kept) and moves
  to the front.
* On the first death ``x-first-death-reason``/``-queue``/``-exchange`` are set.
* The headers table is re-encoded the way RabbitMQ re-encodes it: top-level keys sorted by
  their bytes, 64-bit ``L`` written as ``l``, booleans as 0/1; nested tables keep their order.
* With ``x-dead-letter-routing-key`` the ``CC`` header is dropped.

RabbitMQ 3.10 also has a quirk kept here: when the existing ``x-death`` array has two or more
entries, the entries other than the one being updated come out in reverse order (its legacy
grouping of pre-3.5 histories folds them without reversing the result).

``is_cycle`` is RabbitMQ's cycle detection: a message dead-lettered for an automatic reason
(expired, maxlen) back into a queue it already died in, with no rejection since, is dropped.
Pure functions over ``Message`` (its typed headers in, ``replace_properties`` out); nothing
here touches a queue or a wire codec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dari.message import Field, Message

REJECTED = "rejected"
X_DEATH = "x-death"

_Typed = dict[str, Field]


def record_death(
    message: Message,
    queue: str,
    reason: str,
    now_s: int,
    *,
    exchange: str,
    routing_key: str | None = None,
) -> Message:
    """``message`` as it leaves ``queue`` for dead-letter exchange ``exchange``.

    ``reason`` is rejected, expired, maxlen or delivery_limit; ``now_s`` the time in seconds;
    ``routing_key`` the queue's x-dead-letter-routing-key (None keeps the message's own).
    """
    headers = _typed_headers(message)
    routing_keys = [Field("S", _b(message.routing_key))]
    routing_keys += [v for v in _array(headers.get("CC")) if v.tag == "S"]
    info: _Typed = {
        "reason": Field("S", _b(reason)),
        "queue": Field("S", _b(queue)),
        "time": Field("T", now_s),
        "exchange": Field("S", _b(message.exchange)),
        "routing-keys": Field("A", routing_keys),
    }
    if message.expiration is not None:
        info["original-expiration"] = Field("S", _b(message.expiration))
    headers = _update_x_death(headers, info)
    if routing_key is not None:
        headers.pop("CC", None)
    dead = message.replace_properties(headers=headers, expiration=None)
    return dead._replace(
        exchange=exchange, routing_key=message.routing_key if routing_key is None else routing_key
    )


def is_cycle(message: Message, queue: str) -> bool:
    """True when routing the dead-lettered ``message`` to ``queue`` closes a fully automatic
    cycle: ``queue`` is in its x-death history and no death since then (that one included)
    was a rejection. Call it only for deaths not caused by a rejection."""
    deaths = _array(_typed_headers(message).get(X_DEATH))
    name = _b(queue)
    for index, death in enumerate(deaths):
        if death.tag == "F" and death.value.get("queue") == Field("S", name):
            return all(
                d.tag == "F" and d.value.get("reason") != Field("S", _b(REJECTED))
                for d in deaths[: index + 1]
            )
    return False


def headers_of(message: Message) -> Mapping[str, Any] | None:
    """The message's headers as plain values (what a headers exchange routes on)."""
    return message.headers


# ---- x-death ----------------------------------------------------------------------------------


def _update_x_death(headers: _Typed, info: _Typed) -> _Typed:
    """``rabbit_dead_letter:update_x_death_header``, then the sort ``set_table_value`` does."""
    key = (info["queue"].value, info["reason"].value)
    current = headers.get(X_DEATH)
    if current is None:
        headers["x-first-death-reason"] = info["reason"]
        headers["x-first-death-queue"] = info["queue"]
        headers["x-first-death-exchange"] = info["exchange"]
        headers[X_DEATH] = Field("A", [Field("F", {"count": Field("l", 1), **info})])
    elif current.tag == "A":
        tables = current.value
        grouped = _group(tables) if len(tables) > 1 else list(tables)
        match = next((i for i, t in enumerate(grouped) if _key(t) == key), None)
        if match is None:
            death = {"count": Field("l", 1), **info}
        else:
            death = _increment(grouped.pop(match).value)
        headers[X_DEATH] = Field("A", [Field("F", _sorted(death)), *grouped])
    else:  # not an array (a client rewrote it): start the history afresh
        headers[X_DEATH] = Field("A", [Field("F", {"count": Field("l", 1), **info})])
    return _sorted(headers)


def _group(tables: Iterable[Field]) -> list[Field]:
    """RabbitMQ's ``group_by_queue_and_reason``: one table per (queue, reason), the first
    of each, given a count of how many there were when it had none; in reverse order."""
    tables = list(tables)
    grouped: list[Field] = []
    seen: set[Any] = set()
    for index, table in enumerate(tables):
        if table.tag != "F":  # not a death record (RabbitMQ fails on these): keep it as is
            key: Any = ("entry", index)
            item = table
        else:
            key = _key(table)
            same = [t for t in tables if t.tag == "F" and _key(t) == key]
            item = same[0]
            if "count" not in item.value:
                item = Field("F", {"count": Field("l", len(same)), **item.value})
        if not grouped:
            grouped = [item]
        elif key not in seen:
            grouped.insert(0, item)
        seen.add(key)
    return grouped


def _key(table: Field) -> tuple[Any, Any] | None:
    if table.tag != "F":
        return None
    queue, reason = table.value.get("queue"), table.value.get("reason")
    return (
        None if queue is None else queue.value,
        None if reason is None else reason.value,
    )


def _increment(death: Mapping[str, Field]) -> _Typed:
    count = death.get("count")
    if count is None:
        return {"count": Field("l", 1), **death}
    value = count.value + 1 if isinstance(count.value, int) else 1
    return {k: (Field("l", value) if k == "count" else v) for k, v in death.items()}


# ---- field helpers -----------------------------------------------------------------------------


def _typed_headers(message: Message) -> _Typed:
    """The headers with wire types, normalised as RabbitMQ's decode/encode round trip leaves
    them (``L`` -> ``l``, booleans 0/1)."""
    return {k: _normalise(v) for k, v in message.typed_headers().items()}


def _normalise(field: Field) -> Field:
    tag, value = field
    if tag == "L":
        return Field("l", value)
    if tag == "t":
        return Field("t", 1 if value else 0)
    if tag == "F":
        return Field("F", {k: _normalise(v) for k, v in value.items()})
    if tag == "A":
        return Field("A", [_normalise(v) for v in value])
    return field


def _sorted(table: Mapping[str, Field]) -> _Typed:
    """Keys in RabbitMQ's order (``lists:keysort`` on binaries: byte order)."""
    return dict(sorted(table.items(), key=lambda kv: _b(kv[0])))


def _array(field: Field | None) -> list[Field]:
    return list(field.value) if field is not None and field.tag == "A" else []


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
