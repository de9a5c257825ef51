"""Helpers for tests: waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lojasync.embedded_broker import EmbeddedBroker
from lojasync.envelope import Envelope
from lojasync.messaging import Broker
from lojasync.packing import BATCH_CONTENT_TYPE, pack_events, unpack
from lojasync.partitioning import outgoing_event
from lojasync.persistence import OutgoingEvent
from lojasync.policy import load_policy
from lojasync.service import create_broker

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


def event_bodies(message: Any) -> list[bytes]:
    """Return the serialized events of a delivered message: itself, or a pack's events."""
    if message.content_type == BATCH_CONTENT_TYPE:
        return unpack(message.body)
    return [message.body]


class Probe:
    """A test queue bound to the namespace's exchange that collects every event it gets.

    It works on RabbitMQ and on the embedded broker alike: the queue is a durable one
    with a unique name, deleted on exit.
    """

    def __init__(self, broker_url: str, namespace: str, bindings: list[str]) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.bindings = bindings
        self.events: list[tuple[str, Envelope]] = []
        self._broker: Broker | EmbeddedBroker | None = None
        self._consumer = f"probe-{uuid.uuid4().hex[:10]}"

    async def __aenter__(self) -> Probe:
        self._broker = create_broker(self.broker_url, self.namespace)
        await self._broker.connect(attempts=3)
        queue = await self._broker.declare_queue(self._consumer, self.bindings)
        await queue.consume(self._collect)  # type: ignore[arg-type]
        return self

    async def _collect(self, message: Any) -> None:
        for body in event_bodies(message):
            self.events.append((message.routing_key or "", Envelope.from_bytes(body)))
        await message.ack()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._broker is not None:
            await self._broker.delete_queue(self._consumer)
            await self._broker.close()

    async def publish(self, envelope: Envelope, routing_key: str) -> None:
        """Publish as a service's outbox relay would, partition header included."""
        assert self._broker is not None, "Probe.publish needs `async with` first"
        await self._broker.publish([outgoing_event(envelope, routing_key, load_policy())])

    async def publish_pack(self, envelopes: list[Envelope], routing_key: str) -> None:
        """Publish `envelopes` in one pack message, as an outbox relay packs a round."""
        assert self._broker is not None, "Probe.publish_pack needs `async with` first"
        policy = load_policy()
        events = [outgoing_event(envelope, routing_key, policy) for envelope in envelopes]
        [pack] = pack_events(events, partitions=self._broker.partitions)
        await self._broker.publish([pack])

    async def publish_raw(self, body: bytes, routing_key: str) -> None:
        assert self._broker is not None, "Probe.publish_raw needs `async with` first"
        await self._broker.publish([OutgoingEvent(str(uuid.uuid4()), routing_key, "unknown", body)])

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


class Collector:
    """A consumer callback that keeps every delivery without settling it.

    Works with aio-pika's messages and the embedded broker's alike.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)

    @property
    def ids(self) -> list[str | None]:
        return [message.message_id for message in self.messages]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        await eventually(
            self._count,
            until=lambda found: found >= count,
            timeout=timeout,
            what=f"{count} messages",
        )
        return self.messages

    async def _count(self) -> int:
        return len(self.messages)
