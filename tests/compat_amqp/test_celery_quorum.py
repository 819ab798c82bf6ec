"""Celery on quorum queues with a real worker process: the worker declares its queue and the
native delayed-delivery queues (``celery_delayed_*``) as quorum queues, and a task with a
countdown travels through them, running once its delay has passed and not before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pika.exceptions import ChannelClosedByBroker

from .amqp_clients import WAIT_S, channel, wait_until
from .celery_quorum_app import BROKER_ENV, QUEUE_ENV, make_quorum_app

HERE = Path(__file__).resolve().parent
COUNTDOWN_S = 2
DELAYED = [f"celery_delayed_{level}" for level in range(28)]


def delayed_arguments(level: int) -> dict[str, object]:
    """What kombu declares the delayed-delivery queue of ``level`` with (less its type)."""
    return {
        "x-overflow": "reject-publish",
        "x-message-ttl": 2**level * 1000,
        "x-dead-letter-exchange": f"celery_delayed_{level - 1}" if level else (
            "celery_delayed_delivery"
        ),
        "x-dead-letter-strategy": "at-least-once",
    }


def is_quorum(url: str, queue: str, arguments: dict[str, object] | None = None) -> bool:
    """True if `queue` exists as a quorum queue: a redeclare with its ``arguments`` but of
    type classic is inequivalent in x-queue-type."""
    with channel(url) as ch:
        try:
            ch.queue_declare(
                queue, durable=True, arguments={**(arguments or {}), "x-queue-type": "classic"}
            )
        except ChannelClosedByBroker as exc:
            return exc.reply_code == 406 and "received 'classic' but current is 'quorum'" in (
                exc.reply_text
            )
        return False


@pytest.fixture
def quorum_worker(amqp_url: str, name: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `celery worker` subprocess on quorum queues, consuming this test's own queue."""
    log = tmp_path / "celery-worker.log"
    env = {**os.environ, BROKER_ENV: amqp_url, QUEUE_ENV: name, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_quorum_app", "worker",
                "--pool=threads", "--concurrency=2", "--loglevel=INFO", "-n", f"{name}@localhost",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield name, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with channel(amqp_url) as ch:  # the worker's own durable queue and exchange
            ch.queue_delete(name)
            ch.exchange_delete(name)


def test_countdown_task_runs_through_native_delayed_delivery(
    amqp_url: str, quorum_worker: tuple[str, Path]
) -> None:
    queue, log = quorum_worker
    client = make_quorum_app(amqp_url, queue)
    try:
        try:
            assert client.signature("dari_quorum_test.add", args=(2, 3)).delay().get(
                timeout=WAIT_S
            ) == 5
        except Exception as exc:  # the worker's log says why
            raise AssertionError(f"{exc!r}\n--- worker log ---\n{log.read_text()[-6000:]}") from exc
        wait_until(
            lambda: log.read_text(errors="replace"), lambda text: " ready." in text,
            "the worker to be ready (delayed delivery is set up before)",
        )
        assert is_quorum(amqp_url, queue), "task_default_queue_type=quorum"
        for level, delayed in enumerate(DELAYED):
            assert is_quorum(amqp_url, delayed, delayed_arguments(level)), delayed

        sent = time.time()
        result = client.signature("dari_quorum_test.stamp").apply_async(countdown=COUNTDOWN_S)
        try:
            routing_key, ran = result.get(timeout=WAIT_S + COUNTDOWN_S)
        except Exception as exc:
            raise AssertionError(f"{exc!r}\n--- worker log ---\n{log.read_text()[-6000:]}") from exc
        bits = ".".join(f"{COUNTDOWN_S:028b}")
        assert routing_key == f"{bits}.{queue}", "it came through the celery_delayed_* levels"
        # the delay is a 2000 ms TTL counted in whole milliseconds from the enqueue
        assert ran - sent >= COUNTDOWN_S - 0.002, f"ran {ran - sent:.3f} s after sending"
        assert ran - sent < COUNTDOWN_S + WAIT_S, f"ran {ran - sent:.3f} s after sending"
    finally:
        client.close()
