"""The timer that drives AMQP expiry: calls ``AMQPBroker.tick`` a few times a second.

The broker model (``queues.broker``) decides what has expired at a given time; this loop only
supplies the time. Owned by the broker process's task group, which cancels it on stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dari.queues.broker import AMQPBroker


async def expire_forever(
    broker: AMQPBroker, interval_s: float = 0.25, clock: Callable[[], float] = time.time
) -> None:
    """Drop messages whose TTL passed (dead-lettering them) and delete queues left unused
    for their x-expires period, every ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        broker.tick(int(clock() * 1000))
