"""asyncio adapter for the Kafka listener: socket bytes -> codec -> handlers -> socket bytes.

One ``KafkaConnection`` per client socket. It parses every complete frame of each read, calls
the handler synchronously and writes all replies of the read with one ``writelines``. Handlers
that must wait (long-poll fetch, produce awaiting fsync) return an awaitable; Kafka requires
responses in request order, so later replies queue behind it.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from dari.protocol.kafka.codec import encode_api_versions_fallback, encode_response, parse_request
from dari.protocol.kafka.errors import (
    FrameTooLargeError,
    KafkaProtocolError,
    UnsupportedVersionError,
)
from dari.protocol.kafka.framing import RequestFramer
from dari.server.kafka_handlers import KafkaHandlers

log = logging.getLogger(__name__)

API_VERSIONS = 18
# Stop reading from a client with this many responses still waiting to be sent.
MAX_QUEUED_RESPONSES = 256

Buffers = list[bytes | memoryview]

# Address of the client whose request is being handled, as Kafka reports a member's host
# ("/127.0.0.1"); set for each read, so handlers (JoinGroup) can record who asked.
client_host: ContextVar[str] = ContextVar("kafka_client_host", default="")
# The connection whose request is being handled, for state tied to it (share sessions end
# with their connection, as in Kafka).
current_connection: ContextVar[KafkaConnection | None] = ContextVar(
    "kafka_connection", default=None
)


def kafka_host(peername: Any) -> str:
    """A socket peer as Java's InetAddress prints it: "/" and the IP, IPv6 unabbreviated
    ("/0:0:0:0:0:0:0:1") and IPv4-mapped IPv6 as IPv4, as a Kafka broker shows it."""
    if not peername:
        return ""
    text = str(peername[0])
    ip, sep, scope = text.partition("%")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"/{text}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"/{address.ipv4_mapped}"
        groups = ":".join(f"{int(group, 16):x}" for group in address.exploded.split(":"))
        return f"/{groups}{sep}{scope}"
    return f"/{address}"


class KafkaConnection(asyncio.Protocol):
    """State of one client connection; owned by the event loop thread."""

    def __init__(
        self, handlers: KafkaHandlers, max_request_bytes: int, connections: set[KafkaConnection]
    ) -> None:
        self.handlers = handlers
        self.framer = RequestFramer(max_request_bytes)
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = ""
        # Responses in request order: finished buffers, or tasks still computing theirs.
        self.queue: deque[Buffers | asyncio.Task[Any]] = deque()
        self.out: Buffers = []
        self.reading_paused = False
        self.writing_paused = False
        self.closing = False
        # Called once when the connection is lost (registered by handlers, e.g. share sessions).
        self.close_callbacks: list[Callable[[KafkaConnection], None]] = []

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.host = kafka_host(peer)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        callbacks, self.close_callbacks = self.close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("connection close callback failed for %s", self.peer)
        for item in self.queue:
            if isinstance(item, asyncio.Task):
                item.cancel()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except FrameTooLargeError as exc:
            self._abort(f"{exc}")
            return
        client_host.set(self.host)
        current_connection.set(self)
        for frame in frames:
            if self.closing:
                return
            self._handle(frame)
        self._flush()

    # -- request handling ------------------------------------------------------------------
    def _handle(self, frame: memoryview) -> None:
        try:
            header, body = parse_request(frame)
        except UnsupportedVersionError as exc:
            if exc.header is not None and exc.header.api_key == API_VERSIONS:
                self._enqueue([encode_api_versions_fallback(exc.header)])
            else:
                self._abort(str(exc))
            return
        except KafkaProtocolError as exc:
            self._abort(str(exc))
            return
        handler = self.handlers.table.get(header.api_key)
        if handler is None:
            self._abort(f"API {header.api_key} v{header.api_version} is not implemented")
            return
        try:
            result = handler(header, body)
        except Exception:
            log.exception("error handling API %d from %s", header.api_key, self.peer)
            self._abort("internal error", quiet=True)
            return
        if result is None:
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish(header, result))
            task.add_done_callback(self._task_done)
            self._enqueue(task)
        else:
            self._enqueue(self._encode(header, result))

    async def _finish(self, header: Any, awaitable: Any) -> Buffers:
        return self._encode(header, await awaitable)

    @staticmethod
    def _encode(header: Any, result: Any) -> Buffers:
        if isinstance(result, list):
            return result
        if isinstance(result, bytes | bytearray):
            return [result]
        return [encode_response(header, result)]

    def _enqueue(self, item: Buffers | asyncio.Task[Any]) -> None:
        if not self.queue and not isinstance(item, asyncio.Task):
            self.out.extend(item)
            return
        self.queue.append(item)
        self._update_reading()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self.closing or task.cancelled():
            return
        if task.exception() is not None:
            log.error("error completing request from %s", self.peer, exc_info=task.exception())
            self._abort("internal error", quiet=True)
            return
        while self.queue:
            head = self.queue[0]
            if isinstance(head, asyncio.Task):
                if not head.done():
                    break
                self.out.extend(head.result())
            else:
                self.out.extend(head)
            self.queue.popleft()
        self._flush()
        self._update_reading()

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.closing:
            self.transport.writelines(self.out)
        self.out = []

    def _update_reading(self) -> None:
        if self.transport is None or self.closing:
            return
        should_pause = self.writing_paused or len(self.queue) >= MAX_QUEUED_RESPONSES
        if should_pause and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        elif not should_pause and self.reading_paused:
            self.transport.resume_reading()
            self.reading_paused = False

    def _abort(self, reason: str, quiet: bool = False) -> None:
        """Close the connection after a protocol error, as Kafka does; other clients go on."""
        if not quiet:
            log.warning("closing Kafka connection from %s: %s", self.peer, reason)
        self._flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Stop at shutdown: send what is ready, then close."""
        self._flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()
