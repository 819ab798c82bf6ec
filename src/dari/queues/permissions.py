"""RabbitMQ's access control: per user and vhost, a configure, a write and a read pattern.

An operation on a resource needs one permission on it (RabbitMQ's table: declaring or deleting
needs configure, publishing to an exchange or binding to a queue needs write on it, consuming
from a queue or binding from an exchange needs read on it). A permission is granted when its
regular expression matches the resource's name anywhere (Erlang's ``re:run``, a search: anchor
with ``^``/``$``); the empty pattern stands for ``^$``, i.e. no access, as RabbitMQ has it.
Matching is on the UTF-8 bytes, as Erlang matches a binary. The default exchange ``""`` is named
``amq.default`` in checks and in refusals. Pure: no I/O, no protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dari.queues.errors import AccessRefused, resource

CONFIGURE, WRITE, READ = "configure", "write", "read"
KINDS = (CONFIGURE, WRITE, READ)
ALL = ".*"


class PermissionsError(ValueError):
    """A user's permissions in the config file are malformed; the message says which."""


def compile_pattern(pattern: str) -> re.Pattern[bytes]:
    """RabbitMQ's pattern semantics: searched in the name; ``""`` means ``^$`` (nothing)."""
    try:
        return re.compile((pattern or "^$").encode())
    except re.error as exc:
        raise PermissionsError(f"invalid regular expression {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class Permissions:
    """One user's three patterns in one vhost."""

    configure: str = ALL
    write: str = ALL
    read: str = ALL
    # ``.*`` for all three: every check passes, so callers skip them
    unrestricted: bool = field(init=False, compare=False)
    _compiled: dict[str, re.Pattern[bytes]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = {kind: compile_pattern(getattr(self, kind)) for kind in KINDS}
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "unrestricted", self.configure == self.write == self.read == ALL)

    def allows(self, kind: str, name: str) -> bool:
        """Whether permission ``kind`` (configure, write or read) is granted on ``name``."""
        return self._compiled[kind].search(name.encode()) is not None

    def allows_any(self, name: str) -> bool:
        """Passive declares need any of the three (RabbitMQ >= 4.2.7, rabbitmq-server#16085)."""
        return any(self.allows(kind, name) for kind in KINDS)


FULL = Permissions()
NO_ACCESS = Permissions("", "", "")


def check_name(kind: str, name: str) -> str:
    """The name a resource is checked under: the default exchange is ``amq.default``."""
    return "amq.default" if kind == "exchange" and not name else name


def refusal(permission: str, kind: str, name: str, vhost: str, user: str) -> AccessRefused:
    """RabbitMQ's text: "write access to exchange 'x' in vhost '/' refused for user 'u'"."""
    where = resource(kind, check_name(kind, name), vhost)
    return AccessRefused(f"{permission} access to {where} refused for user '{user}'")


def _entry(vhost: str, value: Any) -> Permissions:
    if not isinstance(value, Mapping):
        raise PermissionsError(
            f"permissions for vhost {vhost!r} must be a table "
            '{ configure = "...", write = "...", read = "..." }'
        )
    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        raise PermissionsError(f"unknown permission {unknown[0]!r} for vhost {vhost!r}")
    missing = [kind for kind in KINDS if kind not in value]
    if missing:
        raise PermissionsError(f"vhost {vhost!r} lacks the {missing[0]} permission")
    for kind in KINDS:
        if not isinstance(value[kind], str):
            raise PermissionsError(f"{kind} permission for vhost {vhost!r} must be a string")
        try:
            compile_pattern(value[kind])
        except PermissionsError as exc:
            raise PermissionsError(f"{kind} permission for vhost {vhost!r}: {exc}") from None
    return Permissions(value[CONFIGURE], value[WRITE], value[READ])


def parse_permissions(
    table: Mapping[str, Any] | None, vhosts: Iterable[str] | None = None
) -> dict[str, Permissions]:
    """A user's ``permissions`` table (vhost -> three patterns) merged with its ``vhosts`` list,
    whose vhosts get ``.*`` for all three unless the table says otherwise."""
    if table is not None and not isinstance(table, Mapping):
        raise PermissionsError("permissions must be a table of vhost = { configure, write, read }")
    if vhosts is not None and (
        isinstance(vhosts, str) or not all(isinstance(v, str) for v in vhosts)
    ):
        raise PermissionsError("vhosts must be a list of vhost names")
    out = dict.fromkeys(vhosts or (), FULL)
    for vhost, value in (table or {}).items():
        out[vhost] = _entry(vhost, value)
    return out


def user_permissions(attrs: Mapping[str, Any]) -> dict[str, Permissions]:
    """The permissions of a ``[users.NAME]`` table: without a ``permissions`` table, ``vhosts``
    defaults to ``["/"]`` (full access to the default vhost), as before permissions existed."""
    default = None if "permissions" in attrs else ["/"]
    return parse_permissions(attrs.get("permissions"), attrs.get("vhosts", default))
