"""kombu (the messaging layer under Celery) and a real Celery worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
from celery import group

from .amqp_clients import WAIT_S, channel
from .celery_app import BROKER_ENV, QUEUE_ENV, make_app

HERE = Path(__file__).resolve().parent


def test_kombu_simple_queue_round_trip(amqp_url: str, name: str) -> None:
    with kombu.Connection(amqp_url, connect_timeout=10) as conn:
        queue = conn.SimpleQueue(name)
        try:
            payloads = [{"n": i, "text": "héllo", "items": [1, 2.5, None]} for i in range(20)]
            for payload in payloads:
                queue.put(payload)
            got = []
            for _ in payloads:
                message = queue.get(block=True, timeout=WAIT_S)
                got.append(message.payload)
                message.ack()
            assert got == payloads, "kombu serializes to JSON and back, in order"
            assert queue.qsize() == 0
            with pytest.raises(queue.Empty):
                queue.get(block=True, timeout=0.5)
        finally:
            queue.close()  # cancels its consumer first: deleting a consumed queue cancels it
            leftover = queue.queue(conn.channel())
            leftover.delete()
            leftover.exchange.delete()


def test_kombu_producer_consumer_with_topic_exchange(amqp_url: str, name: str) -> None:
    exchange = kombu.Exchange(f"{name}-x", type="topic", auto_delete=True)
    queue = kombu.Queue(name, exchange, routing_key="jobs.#", auto_delete=True)
    received: list[tuple[str, object]] = []
    with kombu.Connection(amqp_url, connect_timeout=10) as conn:
        with conn.Consumer(
            queue,
            callbacks=[
                lambda body, msg: (
                    received.append((msg.delivery_info["routing_key"], body)),
                    msg.ack(),
                )
            ],
            accept=["json"],
        ):
            producer = conn.Producer()
            for i in range(5):
                producer.publish(
                    {"job": i}, exchange=exchange, routing_key=f"jobs.{i}", declare=[queue]
                )
            producer.publish({"job": "ignored"}, exchange=exchange, routing_key="other.1")
            while len(received) < 5:
                conn.drain_events(timeout=WAIT_S)
        assert received == [(f"jobs.{i}", {"job": i}) for i in range(5)]


@pytest.fixture
def celery_worker(amqp_url: str, name: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `celery worker` subprocess consuming this test's own queue."""
    log = tmp_path / "celery-worker.log"
    env = {**os.environ, BROKER_ENV: amqp_url, QUEUE_ENV: name, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "--pool=threads", "--concurrency=2", "--loglevel=INFO", "-n", f"{name}@localhost",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield name, log
    finally:
        # A warm shutdown is only noticed at the worker loop's next wake-up (~10 s when idle);
        # the test is over, so give it a moment and then stop it hard.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with channel(amqp_url) as ch:  # the worker declared a durable queue and exchange
            ch.queue_delete(name)
            ch.exchange_delete(name)


def test_celery_worker_executes_tasks_and_returns_results(
    amqp_url: str, celery_worker: tuple[str, Path]
) -> None:
    queue, log = celery_worker
    client = make_app(amqp_url, queue)
    try:
        try:
            result = client.signature("dari_test.add", args=(2, 3)).delay()
            assert result.get(timeout=WAIT_S) == 5
        except Exception as exc:  # the worker's log says why (connection refused, bad frame...)
            raise AssertionError(f"{exc!r}\n--- worker log ---\n{log.read_text()[-6000:]}") from exc

        batch = group(client.signature("dari_test.add", args=(i, i)) for i in range(20))()
        assert batch.get(timeout=WAIT_S) == [2 * i for i in range(20)]

        payload = {"text": "ünïcode", "nested": [1, {"k": None}], "float": 1.5}
        assert (
            client.signature("dari_test.echo", args=(payload,)).delay().get(timeout=WAIT_S)
            == payload
        )

        failing = client.signature("dari_test.fail", args=("boom",)).delay()
        with pytest.raises(ValueError, match="boom"):
            failing.get(timeout=WAIT_S)
        assert failing.state == "FAILURE"
    finally:
        client.close()
