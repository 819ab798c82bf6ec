"""Wake long-polling fetches when data is appended, instead of answering on a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class AppendWaiters:
    """Futures of fetches waiting for appends, keyed by partition log identity.

    Owned by the event loop thread. A fetch registers one future under every partition it reads;
    the first append to any of them resolves it.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, set[asyncio.Future[None]]] = {}

    def notify(self, key: object) -> None:
        futures = self._waiting.pop(id(key), None)
        if futures:
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def wait_any(self, keys: Iterable[object], timeout: float) -> None:
        """Return after the first append to any of ``keys``, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        ids = [id(key) for key in keys]
        for ident in ids:
            self._waiting.setdefault(ident, set()).add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            for ident in ids:
                waiting = self._waiting.get(ident)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiting[ident]
