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
