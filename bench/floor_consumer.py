"""One consumer of the broker floor, run as its own process like a store registry.

`python -m bench.floor_consumer --broker-url URL --queue NAME --expected N` consumes NAME
with manual acks and prints two lines on stdout: `ready` once it consumes, then a JSON
object with the messages received and the `time.monotonic()` of the last ack. On Linux
that clock is CLOCK_MONOTONIC, which every process of the machine shares, so the parent
can compare it with its own. The process exits with status 1 when fewer than N messages
arrive within --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def consume(
    broker_url: str, queue_name: str, expected: int, prefetch: int, ack_every: int, timeout: float
) -> int:
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name)
        done = asyncio.Event()
        received = 0
        last_ack = 0.0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received, last_ack
            received += 1
            # Like the services' batch consumer: one `multiple` ack covers a batch.
            if received % ack_every == 0 or received == expected:
                await message.ack(multiple=True)
                last_ack = time.monotonic()
            if received == expected:
                done.set()

        await queue.consume(on_message, no_ack=False)
        print("ready", flush=True)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            print(
                json.dumps({"received": received, "error": f"timed out after {timeout:.0f} s"}),
                flush=True,
            )
            return 1
        print(json.dumps({"received": received, "finished_at": last_ack}), flush=True)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_consumer")
    parser.add_argument("--broker-url", required=True, help="AMQP URL of RabbitMQ")
    parser.add_argument("--queue", required=True, help="queue to consume; it must exist")
    parser.add_argument("--expected", type=int, required=True, help="messages to wait for")
    parser.add_argument("--prefetch", type=int, default=1000, help="unacked messages at most")
    parser.add_argument("--ack-every", type=int, default=500, help="messages per multiple ack")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    args = parser.parse_args(argv)
    return asyncio.run(
        consume(
            args.broker_url, args.queue, args.expected, args.prefetch, args.ack_every, args.timeout
        )
    )


if __name__ == "__main__":
    sys.exit(main())
