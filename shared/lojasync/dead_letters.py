"""Read the dead-letter queue and send chosen messages back to the queue they came from.

Every message that a consumer could not handle is copied to `<namespace>.dead-letters`
with the reason in `x-lojasync-reason` and its queue in `x-lojasync-queue`. Listing
takes the messages without acknowledging them and returns them to the queue afterwards,
so it changes nothing. Re-publishing sends a message to its original queue through the
default exchange (so it reaches that consumer only), waits for the broker's confirm, and
only then removes it from the dead letters.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from lojasync.messaging import QUEUE_HEADER, REASON_HEADER


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    queue: str
    routing_key: str
    reason: str
    event_type: str | None
    body_preview: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "queue": self.queue,
            "routing_key": self.routing_key,
            "reason": self.reason,
            "event_type": self.event_type,
            "body_preview": self.body_preview,
        }


@dataclass(frozen=True)
class RepublishResult:
    republished: list[str]
    not_found: list[str]


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        message_id=message.message_id or "",
        queue=str(headers.get(QUEUE_HEADER, "")),
        routing_key=message.routing_key or "",
        reason=str(headers.get(REASON_HEADER, "")),
        event_type=message.type,
        body_preview=message.body[:200].decode("utf-8", errors="replace"),
    )


async def _take_all(
    channel: AbstractChannel, namespace: str, limit: int
) -> list[AbstractIncomingMessage]:
    queue = await channel.get_queue(f"{namespace}.dead-letters")
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


async def list_dead_letters(
    broker_url: str, namespace: str, *, limit: int = 1000
) -> list[DeadLetter]:
    """Return up to `limit` dead letters, oldest first, leaving them in the queue."""
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        taken = await _take_all(channel, namespace, limit)
        letters = [_dead_letter(message) for message in taken]
        for message in taken:
            await message.nack(requeue=True)
    return letters


async def republish_dead_letters(
    broker_url: str,
    namespace: str,
    message_ids: Collection[str] | None,
    *,
    limit: int = 100_000,
) -> RepublishResult:
    """Send the dead letters with `message_ids` (all when None) back to their queues."""
    connection = await aio_pika.connect(broker_url)
    republished: list[str] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        taken = await _take_all(channel, namespace, limit)
        for message in taken:
            letter = _dead_letter(message)
            chosen = message_ids is None or letter.message_id in message_ids
            if not chosen or not letter.queue:
                await message.nack(requeue=True)
                continue
            headers = {
                name: value
                for name, value in (message.headers or {}).items()
                if name not in (REASON_HEADER, QUEUE_HEADER)
            }
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                type=message.type,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(copy, routing_key=letter.queue, mandatory=True)
            await message.ack()
            republished.append(letter.message_id)
    wanted = set(message_ids) if message_ids is not None else set()
    return RepublishResult(republished, sorted(wanted - set(republished)))
