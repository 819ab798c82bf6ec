"""The Celery application the worker subprocess runs (`celery -A celery_app worker`).

Task names are explicit so the worker (which imports this file as `celery_app`) and the test
process (which imports it as part of the test package) agree on them.
"""

from __future__ import annotations

import os

from celery import Celery

BROKER_ENV = "DARI_CELERY_BROKER"
QUEUE_ENV = "DARI_CELERY_QUEUE"


def make_app(broker_url: str, queue: str) -> Celery:
    app = Celery("dari_test", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        result_expires=300,
        worker_hijack_root_logger=False,
    )

    @app.task(name="dari_test.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="dari_test.echo")
    def echo(value: object) -> object:
        return value

    @app.task(name="dari_test.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    return app


app = make_app(
    os.environ.get(BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672//"),
    os.environ.get(QUEUE_ENV, "dari-test"),
)
