"""The Celery application on quorum queues the worker subprocess of `test_celery_quorum` runs
(`celery -A celery_quorum_app worker`).

``task_default_queue_type = "quorum"`` makes Celery (5.5+) declare its queues as quorum
queues, use per-consumer qos, and — as the worker finds quorum queues — set up RabbitMQ-native
delayed delivery: the ``celery_delayed_0..27`` quorum queues and topic exchanges, through which
a task with a countdown travels until its delay has passed. That needs a topic (not direct)
task exchange. Task names are explicit so the worker and the test process agree on them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

BROKER_ENV = "DARI_CELERY_BROKER"
QUEUE_ENV = "DARI_CELERY_QUEUE"


def make_quorum_app(broker_url: str, queue: str) -> Celery:
    app = Celery("dari_quorum_test", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_exchange_type="topic",
        task_default_routing_key=queue,
        task_default_queue_type="quorum",
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        result_expires=300,
        worker_hijack_root_logger=False,
    )

    @app.task(name="dari_quorum_test.stamp", bind=True)
    def stamp(self: Any) -> tuple[str, float]:
        """The routing key the task arrived with and when the worker ran it (wall clock: the
        test compares it with its own)."""
        return (self.request.delivery_info or {}).get("routing_key", ""), time.time()

    @app.task(name="dari_quorum_test.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def __getattr__(attribute: str) -> Celery:
    """``app`` for the worker (``celery -A`` looks it up), made on first use only, so the test
    process that imports ``make_quorum_app`` registers the task names once."""
    if attribute != "app":
        raise AttributeError(attribute)
    global app
    app = make_quorum_app(
        os.environ.get(BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672//"),
        os.environ.get(QUEUE_ENV, "dari-quorum-test"),
    )
    return app
