"""RabbitMQ's permission patterns and the `[users.NAME.permissions]` config tables."""

import re
from pathlib import Path

import pytest

from dari.config import ConfigError, Settings
from dari.queues.broker import User
from dari.queues.errors import AccessRefused
from dari.queues.permissions import (
    FULL,
    NO_ACCESS,
    Permissions,
    PermissionsError,
    check_name,
    parse_permissions,
    refusal,
    user_permissions,
)

FULL_TABLE = {"configure": ".*", "write": ".*", "read": ".*"}


def test_patterns_are_searched_not_matched_whole() -> None:
    perms = Permissions(configure="^alice-", write="logs", read="x$")
    assert perms.allows("configure", "alice-q")
    assert not perms.allows("configure", "bob-alice-q")  # anchored with ^
    assert perms.allows("write", "app.logs.errors")  # unanchored: anywhere in the name
    assert perms.allows("read", "box") and not perms.allows("read", "xy")
    assert not perms.unrestricted


def test_the_empty_pattern_grants_nothing() -> None:
    """RabbitMQ turns "" into "^$": no resource name is empty once the default exchange is
    called amq.default."""
    for kind in ("configure", "write", "read"):
        assert not NO_ACCESS.allows(kind, "q")
        assert not NO_ACCESS.allows(kind, check_name("exchange", ""))
    assert NO_ACCESS.allows("read", "")  # as "^$" does


def test_dot_star_everywhere_is_unrestricted() -> None:
    assert FULL.unrestricted and Permissions(".*", ".*", ".*").unrestricted
    assert not Permissions(".*", ".*", ".+").unrestricted
    assert FULL.allows("configure", "") and FULL.allows_any("anything")


def test_names_are_matched_as_utf8_bytes_like_erlang() -> None:
    # Erlang's re without the unicode option sees bytes: "é" is two of them, and \w is ASCII
    assert Permissions(read="^caf.$").allows("read", "cafe")
    assert not Permissions(read="^caf.$").allows("read", "café")
    assert Permissions(read="^caf..$").allows("read", "café")
    assert not Permissions(read=r"^\w+$").allows("read", "café")


def test_passive_declares_need_any_permission() -> None:
    perms = Permissions(configure="^c-", write="^w-", read="^r-")
    assert all(perms.allows_any(name) for name in ("c-1", "w-1", "r-1"))
    assert not perms.allows_any("z-1")


def test_default_exchange_is_checked_and_refused_as_amq_default() -> None:
    assert check_name("exchange", "") == "amq.default"
    assert check_name("queue", "") == ""
    assert check_name("exchange", "x") == "x"
    err = refusal("write", "exchange", "", "/", "alice")
    assert isinstance(err, AccessRefused) and err.reply_code == 403
    assert err.reply_text == (
        "write access to exchange 'amq.default' in vhost '/' refused for user 'alice'"
    )
    assert refusal("configure", "queue", "q", "v", "bob").reply_text == (
        "configure access to queue 'q' in vhost 'v' refused for user 'bob'"
    )


def test_listed_vhosts_get_full_access_and_tables_override_them() -> None:
    parsed = parse_permissions(
        {"/": {"configure": "^a-", "write": ".*", "read": ""}, "v.2": FULL_TABLE}, ["/", "other"]
    )
    assert parsed["other"] is FULL
    assert parsed["/"] == Permissions("^a-", ".*", "")
    assert parsed["v.2"].unrestricted


def test_user_permissions_default_to_the_default_vhost_only_without_a_table() -> None:
    assert user_permissions({"password": "x"}) == {"/": FULL}
    assert user_permissions({"vhosts": ["a"]}) == {"a": FULL}
    # with a table, only the vhosts it (or an explicit vhosts list) names
    assert list(user_permissions({"permissions": {"b": FULL_TABLE}})) == ["b"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"/": {"configure": "(", "write": "", "read": ""}}, "configure permission for vhost '/'"),
        ({"/": {"configure": "", "write": "[", "read": ""}}, "invalid regular expression '['"),
        ({"/": {"configure": "", "write": ""}}, "lacks the read permission"),
        ({"/": {**FULL_TABLE, "admin": ".*"}}, "unknown permission 'admin'"),
        ({"/": {**FULL_TABLE, "read": 1}}, "read permission for vhost '/' must be a string"),
        ({"/": ".*"}, "must be a table"),
    ],
)
def test_malformed_permissions_are_refused(table: dict, message: str) -> None:
    with pytest.raises(PermissionsError, match=re.escape(message)):
        parse_permissions(table)


def test_user_patterns_in_a_vhost() -> None:
    restricted = Permissions("^a-", "^a-", "^a-")
    user = User("alice", "pw", False, ("/", "v"), {"/": restricted})
    assert user.permissions_in("/") is restricted
    assert user.permissions_in("v") is FULL  # listed without patterns
    assert user.permissions_in("w") is NO_ACCESS
    assert User("guest", "guest", True, ("*",)).permissions_in("any") is FULL


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "dari.toml"
    path.write_text(text)
    return Settings.load(path, environ={})


def test_config_file_permissions_table_keeps_dotted_vhost_names(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        '[users.alice]\npassword = "pw"\n'
        "[users.alice.permissions]\n"
        '"/" = { configure = "^alice-.*", write = ".*", read = ".*" }\n'
        '"team.a" = { configure = "", write = "", read = "^x" }\n',
    )
    alice = settings.users()["alice"]
    assert alice["password"] == "pw"
    assert user_permissions(alice) == {
        "/": Permissions("^alice-.*", ".*", ".*"),
        "team.a": Permissions("", "", "^x"),
    }


def test_a_bad_pattern_in_the_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user 'bob': write permission for vhost '/'"):
        _load(
            tmp_path,
            '[users.bob]\npassword = "pw"\n'
            '[users.bob.permissions]\n"/" = { configure = ".*", write = "(", read = ".*" }\n',
        )
