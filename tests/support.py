"""Helpers for tests: waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika

from lojasync.envelope import Envelope
from lojasync.partitioning import outgoing_event
from lojasync.topology import PARTITION_HEADER

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until `until(result)` holds; fail with the last result at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last value: {result!r}")
        await asyncio.sleep(interval)


class Probe:
    """A test queue bound to the namespace's exchange that collects every event it gets."""

    def __init__(self, broker_url: str, namespace: str, bindings: list[str]) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.bindings = bindings
        self.events: list[tuple[str, Envelope]] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def __aenter__(self) -> Probe:
        self._connection = await aio_pika.connect_robust(self.broker_url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(
            self.namespace, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for pattern in self.bindings:
            await queue.bind(self._exchange, routing_key=pattern)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.events.append((message.routing_key or "", Envelope.from_bytes(message.body)))

        await queue.consume(collect)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, envelope: Envelope, routing_key: str) -> None:
        """Publish as a service's outbox relay would, partition header included."""
        assert self._exchange is not None
        event = outgoing_event(envelope, routing_key)
        headers = {PARTITION_HEADER: event.partition_key} if event.partition_key else None
        await self._exchange.publish(
            aio_pika.Message(
                event.body, headers=headers, message_id=event.event_id, type=event.event_type
            ),
            routing_key=routing_key,
        )

    async def publish_raw(self, body: bytes, routing_key: str) -> None:
        assert self._exchange is not None
        await self._exchange.publish(aio_pika.Message(body), routing_key=routing_key)

    def of_type(self, event_type: str) -> list[tuple[str, Envelope]]:
        return [(key, event) for key, event in self.events if event.type == event_type]

    async def wait_for(
        self, count: int, event_type: str, timeout: float = 20.0
    ) -> list[tuple[str, Envelope]]:
        return await eventually(
            lambda: _value(self.of_type(event_type)),
            until=lambda found: len(found) >= count,
            timeout=timeout,
            what=f"{count} {event_type} events",
        )


async def _value(value: T) -> T:
    return value


class LinkProxy:
    """A TCP proxy on 127.0.0.1 whose link can be cut and restored, to fake a network fault.

    `cut` closes every open connection and refuses new ones until `restore`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._open = True

    async def __aenter__(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._open = False
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    def restore(self) -> None:
        self._open = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._connections.update((writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            writer.transport.abort()
