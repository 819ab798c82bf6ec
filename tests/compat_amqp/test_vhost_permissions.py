"""Per-user, per-vhost permissions (configure, write, read patterns), as RabbitMQ applies them.

The user `perm-scoped` may configure names starting `cfg-` or `all-`, write to `wr-`/`all-` and
the default exchange (checked as `amq.default`), and read `rd-`/`all-`; `perm-locked` has the
empty pattern (no access) for all three; `perm-listed` only lists the vhost (full access);
`perm-elsewhere` has permissions in another vhost only. Resources the scoped user may not create
are set up through the default user. A refusal is a channel error 403 ACCESS_REFUSED with
RabbitMQ's text; the connection stays usable.

Against dari the module starts its own broker with a config file defining these users. Against
an external RabbitMQ (DARI_TEST_AMQP_URL) set DARI_TEST_RABBITMQCTL to the rabbitmqctl command
line for that node; the users and the vhost are created through it (skipped without it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from broker import Broker

from .amqp_clients import assert_channel_closed, connect, get_all, parameters
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL, AmqpServer, external_server, server_of

OTHER_VHOST = "perm-other"
SCOPED, LOCKED, LISTED, ELSEWHERE = "perm-scoped", "perm-locked", "perm-listed", "perm-elsewhere"
PASSWORD = "perm-pw"
SCOPED_PATTERNS = ("^(cfg|all)-", r"^(wr|all)-|^amq\.default$", "^(rd|all)-")
# user -> vhost -> (configure, write, read); perm-listed is given `vhosts = ["/"]` in dari's file
_PERMISSIONS: dict[str, dict[str, tuple[str, str, str]]] = {
    SCOPED: {"/": SCOPED_PATTERNS},
    LOCKED: {"/": ("", "", "")},
    LISTED: {"/": (".*", ".*", ".*")},
    ELSEWHERE: {OTHER_VHOST: (".*", ".*", ".*")},
}


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config() -> str:
    lines = [f'"amqp.vhosts" = "/,{OTHER_VHOST}"']
    for user, vhosts in _PERMISSIONS.items():
        lines += [f"[users.{user}]", f'password = "{PASSWORD}"']
        if user == LISTED:
            lines.append('vhosts = ["/"]')
            continue
        lines.append(f"[users.{user}.permissions]")
        for vhost, (configure, write, read) in vhosts.items():
            lines.append(
                f"{_toml(vhost)} = {{ configure = {_toml(configure)}, write = {_toml(write)}, "
                f"read = {_toml(read)} }}"
            )
    return "\n".join(lines) + "\n"


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    ctl = shlex.split(os.environ["DARI_TEST_RABBITMQCTL"])
    subprocess.run([*ctl, *args], check=check, capture_output=True, timeout=60)


def _drop_external_users() -> None:
    for user in _PERMISSIONS:
        _rabbitmqctl("delete_user", user, check=False)
    _rabbitmqctl("delete_vhost", OTHER_VHOST, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqpServer]:
    if EXTERNAL_URL:
        if not os.environ.get("DARI_TEST_RABBITMQCTL"):
            pytest.skip(EXTERNAL_SKIP_REASON + "; set DARI_TEST_RABBITMQCTL to create users")
        _drop_external_users()
        _rabbitmqctl("add_vhost", OTHER_VHOST)
        for user, vhosts in _PERMISSIONS.items():
            _rabbitmqctl("add_user", user, PASSWORD)
            for vhost, patterns in vhosts.items():
                _rabbitmqctl("set_permissions", "-p", vhost, user, *patterns)
        try:
            yield external_server()
        finally:
            _drop_external_users()
        return
    root = tmp_path_factory.mktemp("amqp-permissions")
    config = root / "dari.toml"
    config.write_text(_config())
    broker = Broker(
        root / "data", log_dir=root / "logs", amqp_port=0, extra_args=["--config", str(config)]
    ).start()
    try:
        yield server_of(broker)
    finally:
        broker.close()


def _url(server: AmqpServer, user: str, vhost: str = "") -> str:
    return server.url_with(user=user, password=PASSWORD, vhost=vhost)


@pytest.fixture
def admin(server: AmqpServer) -> Iterator[BlockingChannel]:
    """A channel of the default user, who may do anything (sets up and cleans up)."""
    conn = connect(server.url)
    try:
        yield conn.channel()
    finally:
        conn.close()


@pytest.fixture
def scoped(server: AmqpServer) -> Iterator[pika.BlockingConnection]:
    conn = connect(_url(server, SCOPED))
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


def _refused(
    conn: pika.BlockingConnection, attempt: Callable[[BlockingChannel], Any], text: str
) -> None:
    """`attempt` on a fresh channel is refused with 403 and exactly RabbitMQ's `text`."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as exc:
        attempt(ch)
    assert_channel_closed(exc, 403, "ACCESS_REFUSED", ch)
    assert exc.value.reply_text == f"ACCESS_REFUSED - {_as_said_by(conn, text)}"
    conn.channel().close()  # the connection is still usable


def _server_version(conn: pika.BlockingConnection) -> tuple[int, ...]:
    version = conn._impl.server_properties["version"]  # type: ignore[attr-defined]
    text = version.decode() if isinstance(version, bytes) else str(version)
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _as_said_by(conn: pika.BlockingConnection, text: str) -> str:
    """RabbitMQ names the permission in the text since 4.0 (an external broker may be older)."""
    if EXTERNAL_URL and _server_version(conn) < (4, 0, 0):
        return text.split(" ", 1)[1]
    return text


def _access(permission: str, kind: str, name: str, user: str = SCOPED) -> str:
    return f"{permission} access to {kind} '{name}' in vhost '/' refused for user '{user}'"


def test_declaring_and_deleting_a_queue_needs_configure(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    ch = scoped.channel()
    assert ch.queue_declare(f"cfg-{name}").method.queue == f"cfg-{name}"
    ch.queue_delete(f"cfg-{name}")

    wr, rd = f"wr-{name}", f"rd-{name}"
    _refused(scoped, lambda c: c.queue_declare(wr), _access("configure", "queue", wr))
    admin.queue_declare(rd)
    _refused(scoped, lambda c: c.queue_delete(rd), _access("configure", "queue", rd))
    admin.queue_declare(rd, passive=True)  # still there
    admin.queue_delete(rd)
    # checked before the queue is looked up: deleting a missing queue is refused too
    _refused(scoped, lambda c: c.queue_delete(wr), _access("configure", "queue", wr))


def test_a_server_named_queue_is_checked_under_its_generated_name(server: AmqpServer) -> None:
    conn = connect(_url(server, SCOPED))
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare("", exclusive=True)
        assert_channel_closed(exc, 403, "ACCESS_REFUSED", ch)
        text = _as_said_by(conn, _access("configure", "queue", "amq.gen-NAME"))
        pattern = re.escape(f"ACCESS_REFUSED - {text}").replace("NAME", r"[\w-]{22}")
        assert re.fullmatch(pattern, exc.value.reply_text), exc.value.reply_text
    finally:
        conn.close()
    with connect(_url(server, LISTED)) as conn:
        assert conn.channel().queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


def test_declaring_and_deleting_an_exchange_needs_configure(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    ch = scoped.channel()
    ch.exchange_declare(f"cfg-{name}", "fanout")
    ch.exchange_delete(f"cfg-{name}")

    _refused(
        scoped, lambda c: c.exchange_declare(f"wr-{name}", "fanout"),
        _access("configure", "exchange", f"wr-{name}"),
    )
    admin.exchange_declare(f"rd-{name}", "fanout")
    _refused(
        scoped, lambda c: c.exchange_delete(f"rd-{name}"),
        _access("configure", "exchange", f"rd-{name}"),
    )
    admin.exchange_declare(f"rd-{name}", passive=True)
    admin.exchange_delete(f"rd-{name}")


def test_a_passive_declare_needs_any_permission(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    """RabbitMQ >= 4.2.7 (rabbitmq-server#16085); refused as a configure check would be."""
    if EXTERNAL_URL and _server_version(scoped) < (4, 2, 7):
        pytest.skip("passive declares are checked since RabbitMQ 4.2.7")
    for prefix in ("cfg", "wr", "rd", "zz"):
        admin.queue_declare(f"{prefix}-{name}")
        admin.exchange_declare(f"{prefix}-{name}", "fanout")
    try:
        ch = scoped.channel()
        for prefix in ("cfg", "wr", "rd"):  # any one of the three is enough
            ch.queue_declare(f"{prefix}-{name}", passive=True)
            ch.exchange_declare(f"{prefix}-{name}", passive=True)
        _refused(
            scoped, lambda c: c.queue_declare(f"zz-{name}", passive=True),
            _access("configure", "queue", f"zz-{name}"),
        )
        _refused(
            scoped, lambda c: c.exchange_declare(f"zz-{name}", passive=True),
            _access("configure", "exchange", f"zz-{name}"),
        )
    finally:
        for prefix in ("cfg", "wr", "rd", "zz"):
            admin.queue_delete(f"{prefix}-{name}")
            admin.exchange_delete(f"{prefix}-{name}")


def test_publishing_needs_write_on_the_exchange(
    server: AmqpServer, admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    queue = f"q-{name}"
    admin.queue_declare(queue)
    for exchange in (f"wr-{name}", f"rd-{name}"):
        admin.exchange_declare(exchange, "fanout")
        admin.queue_bind(queue, exchange)
    try:
        ch = scoped.channel()
        ch.confirm_delivery()
        for i in range(3):  # checked on the first publish, remembered for the next ones
            ch.basic_publish(f"wr-{name}", "", f"m{i}".encode())
        ch.basic_publish("", queue, b"direct")  # the default exchange is checked as amq.default
        assert [g.body for g in get_all(admin, queue)] == [b"m0", b"m1", b"m2", b"direct"]

        def publish(exchange: str, *, tx: bool = False) -> Callable[[BlockingChannel], None]:
            def attempt(c: BlockingChannel) -> None:
                if tx:  # refused at publish time, not at commit
                    c.tx_select()
                    c.basic_publish(exchange, queue, b"no")
                    c.tx_commit()
                else:
                    c.confirm_delivery()
                    c.basic_publish(exchange, queue, b"no")

            return attempt

        refused = _access("write", "exchange", f"rd-{name}")
        _refused(scoped, publish(f"rd-{name}"), refused)
        _refused(scoped, publish(f"rd-{name}", tx=True), refused)
        locked = connect(_url(server, LOCKED))
        try:
            _refused(locked, publish(""), _access("write", "exchange", "amq.default", LOCKED))
        finally:
            locked.close()
        assert get_all(admin, queue) == []
    finally:
        admin.queue_delete(queue)
        admin.exchange_delete(f"wr-{name}")
        admin.exchange_delete(f"rd-{name}")


def test_queue_bind_needs_write_on_the_queue_and_read_on_the_exchange(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    for prefix in ("wr", "rd"):
        admin.queue_declare(f"{prefix}-q-{name}")
        admin.exchange_declare(f"{prefix}-x-{name}", "direct")
    try:
        ch = scoped.channel()
        ch.queue_bind(f"wr-q-{name}", f"rd-x-{name}", "k")
        ch.queue_unbind(f"wr-q-{name}", f"rd-x-{name}", "k")
        for method in ("queue_bind", "queue_unbind"):
            # write on the queue is checked first, then read on the exchange
            _refused(
                scoped, lambda c, m=method: getattr(c, m)(f"rd-q-{name}", f"wr-x-{name}", "k"),
                _access("write", "queue", f"rd-q-{name}"),
            )
            _refused(
                scoped, lambda c, m=method: getattr(c, m)(f"wr-q-{name}", f"wr-x-{name}", "k"),
                _access("read", "exchange", f"wr-x-{name}"),
            )
    finally:
        for prefix in ("wr", "rd"):
            admin.queue_delete(f"{prefix}-q-{name}")
            admin.exchange_delete(f"{prefix}-x-{name}")


def test_exchange_bind_needs_write_on_the_destination_and_read_on_the_source(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    for prefix in ("wr", "rd"):
        admin.exchange_declare(f"{prefix}-{name}", "fanout")
    try:
        ch = scoped.channel()
        ch.exchange_bind(f"wr-{name}", f"rd-{name}")
        ch.exchange_unbind(f"wr-{name}", f"rd-{name}")
        for method in ("exchange_bind", "exchange_unbind"):
            _refused(
                scoped, lambda c, m=method: getattr(c, m)(f"rd-{name}", f"wr-{name}"),
                _access("write", "exchange", f"rd-{name}"),
            )
            _refused(
                scoped, lambda c, m=method: getattr(c, m)(f"wr-{name}", f"wr-{name}"),
                _access("read", "exchange", f"wr-{name}"),
            )
    finally:
        for prefix in ("wr", "rd"):
            admin.exchange_delete(f"{prefix}-{name}")


def test_get_consume_and_purge_need_read_on_the_queue(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    for prefix in ("wr", "rd"):
        admin.queue_declare(f"{prefix}-{name}")
        admin.basic_publish("", f"{prefix}-{name}", b"x")
    try:
        ch = scoped.channel()
        method, _props, body = ch.basic_get(f"rd-{name}", auto_ack=True)
        assert method is not None and body == b"x"
        tag = ch.basic_consume(f"rd-{name}", lambda *a: None)
        ch.basic_cancel(tag)
        ch.queue_purge(f"rd-{name}")
        refused = _access("read", "queue", f"wr-{name}")
        _refused(scoped, lambda c: c.basic_get(f"wr-{name}"), refused)
        _refused(scoped, lambda c: c.basic_consume(f"wr-{name}", lambda *a: None), refused)
        _refused(scoped, lambda c: c.queue_purge(f"wr-{name}"), refused)
        assert admin.queue_declare(f"wr-{name}", passive=True).method.message_count == 1
    finally:
        for prefix in ("wr", "rd"):
            admin.queue_delete(f"{prefix}-{name}")


def test_a_dead_letter_exchange_needs_read_on_the_queue_and_write_on_the_exchange(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    for prefix in ("wr", "rd"):
        admin.exchange_declare(f"{prefix}-{name}", "fanout")
    try:
        ch = scoped.channel()

        def dlx(exchange: str) -> dict[str, Any]:
            return {"x-dead-letter-exchange": exchange}

        ch.queue_declare(f"all-{name}", arguments=dlx(f"wr-{name}"))
        ch.queue_declare(f"all-{name}", arguments=dlx(f"wr-{name}"))  # existing: not rechecked
        _refused(
            scoped, lambda c: c.queue_declare(f"all-2-{name}", arguments=dlx(f"rd-{name}")),
            _access("write", "exchange", f"rd-{name}"),
        )
        _refused(
            scoped, lambda c: c.queue_declare(f"cfg-{name}", arguments=dlx(f"wr-{name}")),
            _access("read", "queue", f"cfg-{name}"),
        )
        ch.queue_delete(f"all-{name}")
    finally:
        for prefix in ("wr", "rd"):
            admin.exchange_delete(f"{prefix}-{name}")


def test_an_alternate_exchange_needs_read_on_the_exchange_and_write_on_the_alternate(
    admin: BlockingChannel, scoped: pika.BlockingConnection, name: str
) -> None:
    for prefix in ("wr", "rd"):
        admin.exchange_declare(f"{prefix}-{name}", "fanout")
    try:
        ch = scoped.channel()

        def ae(exchange: str) -> dict[str, Any]:
            return {"alternate-exchange": exchange}

        ch.exchange_declare(f"all-{name}", "direct", arguments=ae(f"wr-{name}"))
        _refused(
            scoped,
            lambda c: c.exchange_declare(f"all-2-{name}", "direct", arguments=ae(f"rd-{name}")),
            _access("write", "exchange", f"rd-{name}"),
        )
        _refused(
            scoped,
            lambda c: c.exchange_declare(f"cfg-{name}", "direct", arguments=ae(f"wr-{name}")),
            _access("read", "exchange", f"cfg-{name}"),
        )
        ch.exchange_delete(f"all-{name}")
    finally:
        for prefix in ("wr", "rd"):
            admin.exchange_delete(f"{prefix}-{name}")


def test_empty_patterns_allow_connecting_and_nothing_else(server: AmqpServer, name: str) -> None:
    conn = connect(_url(server, LOCKED))
    try:
        _refused(conn, lambda c: c.queue_declare(name), _access("configure", "queue", name, LOCKED))
        _refused(
            conn, lambda c: c.exchange_declare(name, "fanout"),
            _access("configure", "exchange", name, LOCKED),
        )
    finally:
        conn.close()


def test_a_listed_vhost_grants_every_permission(server: AmqpServer, name: str) -> None:
    conn = connect(_url(server, LISTED))
    try:
        ch = conn.channel()
        ch.exchange_declare(name, "fanout", auto_delete=True)
        ch.queue_declare(name, exclusive=True)
        ch.queue_bind(name, name)
        ch.confirm_delivery()
        ch.basic_publish(name, "", b"x")
        assert [g.body for g in get_all(ch, name)] == [b"x"]
        ch.queue_delete(name)
    finally:
        conn.close()


def test_permissions_grant_access_to_their_vhost_only(server: AmqpServer, name: str) -> None:
    with pytest.raises(ProbableAccessDeniedError) as exc:
        pika.BlockingConnection(parameters(_url(server, ELSEWHERE)))
    assert "530" in str(exc.value) and "NOT_ALLOWED" in str(exc.value)  # as RabbitMQ says it
    assert f"access to vhost '/' refused for user '{ELSEWHERE}'" in str(exc.value)
    conn = connect(_url(server, ELSEWHERE, OTHER_VHOST))
    try:
        conn.channel().queue_declare(name, exclusive=True)
    finally:
        conn.close()
