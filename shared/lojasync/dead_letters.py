"""Read the dead-letter queue and send chosen messages back to the queue they came from.

Every message that a consumer could not handle is copied to `<namespace>.dead-letters`
with the reason in `x-lojasync-reason` and its queue in `x-lojasync-queue`. Listing
takes the messages without acknowledging them and returns them to the queue afterwards,
so it changes nothing. Re-publishing sends a message to its original queue through the
default exchange (so it reaches that consumer only), waits for the broker's confirm, and
only then removes it from the dead letters.

With an embedded broker URL (`sqlite:///path`) the same functions read the broker file:
listing reads the rows of the dead-letter queue, and re-publishing moves each chosen row
to the tail of its original queue in one SQLite transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from lojasync.embedded_broker import (
    StoredMessage,
    acquire_hub,
    is_embedded_url,
    path_from_url,
    release_hub,
)
from lojasync.messaging import QUEUE_HEADER, REASON_HEADER

logger = logging.getLogger(__name__)


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


def _dead_letter(message: AbstractIncomingMessage | StoredMessage) -> DeadLetter:
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
    if is_embedded_url(broker_url):
        return await _list_embedded(broker_url, namespace, limit)
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
    if is_embedded_url(broker_url):
        return await _republish_embedded(broker_url, namespace, message_ids, limit)
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
            headers = _original_headers(message.headers or {})
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


def _original_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Return a dead letter's headers without the ones dead-lettering added."""
    return {
        name: value for name, value in headers.items() if name not in (REASON_HEADER, QUEUE_HEADER)
    }


async def _list_embedded(broker_url: str, namespace: str, limit: int) -> list[DeadLetter]:
    hub = acquire_hub(path_from_url(broker_url), create=False)
    try:
        return [_dead_letter(stored) for stored in hub.peek(f"{namespace}.dead-letters", limit)]
    finally:
        await release_hub(hub)


async def _republish_embedded(
    broker_url: str, namespace: str, message_ids: Collection[str] | None, limit: int
) -> RepublishResult:
    republished: list[str] = []
    hub = acquire_hub(path_from_url(broker_url), create=False)
    try:
        for stored in hub.peek(f"{namespace}.dead-letters", limit):
            letter = _dead_letter(stored)
            chosen = message_ids is None or letter.message_id in message_ids
            if not chosen or not letter.queue:
                continue
            if hub.move(stored, letter.queue, _original_headers(stored.headers)):
                republished.append(letter.message_id)
            else:
                logger.warning(
                    "dead letter left in place: its queue is not declared in the broker file",
                    extra={"message_id": letter.message_id, "queue": letter.queue},
                )
    finally:
        await release_hub(hub)
    wanted = set(message_ids) if message_ids is not None else set()
    return RepublishResult(republished, sorted(wanted - set(republished)))
