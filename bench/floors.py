"""The two floors that lojasync's throughput is compared with.

Direct-write floor: the run's records upserted straight into each store's database, into
`bench_store_record`, a copy of `store_record` (`LIKE store_record INCLUDING ALL`). Each
batch is one transaction: COPY into a temporary table, then `INSERT ... ON CONFLICT DO
UPDATE`. The three stores are written concurrently from this process. No broker, no
orchestrator, no inbox or outbox.

Broker floor: the run's records as the `record.resolved` events the stores receive (same
bodies and sizes), published once each with publisher confirms to a topic exchange that
routes them to one queue per store, as the orchestrator's events are routed. Three
consumer processes (`bench.floor_consumer`) ack them with the services' prefetch and one
`multiple` ack per batch. No database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractExchange

from bench.results import TimedRun
from bench.system import BenchSystem
from bench.workload import Change, Workload, key_of
from lojasync.digest import content_hash
from lojasync.envelope import ERP_ORIGIN, RECORD_RESOLVED, Envelope, resolved_key, store_target

FLOOR_TABLE = "bench_store_record"
FLOOR_COLUMNS = (
    "entity",
    "record_key",
    "revision",
    "data",
    "content_hash",
    "deleted",
    "local",
    "updated_at",
)
# The services' defaults: LOJASYNC_PREFETCH, LOJASYNC_BATCH_MAX and LOJASYNC_OUTBOX_BATCH.
PREFETCH = 1000
ACK_EVERY = 500
PUBLISH_ROUND = 1000
CONSUMER_TIMEOUT = 600.0

_CREATE_FLOOR_TABLE = f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (LIKE store_record INCLUDING ALL)"
_CREATE_INCOMING = (
    f"CREATE TEMPORARY TABLE bench_incoming (LIKE {FLOOR_TABLE} INCLUDING DEFAULTS) ON COMMIT DROP"
)
_UPSERT = (
    f"INSERT INTO {FLOOR_TABLE} ({', '.join(FLOOR_COLUMNS)})"
    f" SELECT {', '.join(FLOOR_COLUMNS)} FROM bench_incoming"
    " ON CONFLICT (entity, record_key) DO UPDATE SET revision = EXCLUDED.revision,"
    " data = EXCLUDED.data, content_hash = EXCLUDED.content_hash,"
    " deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at"
)

FloorRow = tuple[str, str, int, str, str, bool, str, datetime]


# --- Direct writes -------------------------------------------------------------------------


async def prepare_direct_floor(system: BenchSystem) -> None:
    """Create `bench_store_record` in every store's database."""
    for store_id in system.store_ids:
        connection = await asyncpg.connect(system.store_dsn(store_id))
        try:
            await connection.execute(_CREATE_FLOOR_TABLE)
        finally:
            await connection.close()


def _rows_by_store(workload: Workload, changes: Sequence[Change]) -> dict[str, list[FloorRow]]:
    """Build each store's rows: the record as JSON and its content hash, revision 1."""
    now = datetime.now(UTC)
    rows: dict[str, list[FloorRow]] = {store: [] for store in workload.store_ids}
    for change in changes:
        entity, record = change
        _, key = key_of(change)
        row: FloorRow = (
            entity,
            key,
            1,
            orjson.dumps(record).decode(),
            content_hash(record),
            False,
            "{}",
            now,
        )
        for store in workload.stores_of(entity, record):
            rows[store].append(row)
    return rows


async def _write_store(dsn: str, rows: list[FloorRow], batch_size: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for start in range(0, len(rows), batch_size):
            async with connection.transaction():
                await connection.execute(_CREATE_INCOMING)
                await connection.copy_records_to_table(
                    "bench_incoming",
                    records=rows[start : start + batch_size],
                    columns=list(FLOOR_COLUMNS),
                )
                await connection.execute(_UPSERT)
    finally:
        await connection.close()


async def run_direct_floor(
    system: BenchSystem, workload: Workload, index: int, *, batch_size: int
) -> TimedRun:
    """Upsert slice `index` into every store's floor table; time it to the last commit.

    The time includes building the rows (JSON and content hash) once for all stores.
    """
    changes = workload.run_records(index)
    started = time.monotonic()
    rows = _rows_by_store(workload, changes)
    await asyncio.gather(
        *(
            _write_store(system.store_dsn(store), store_rows, batch_size)
            for store, store_rows in rows.items()
        )
    )
    return TimedRun(changes=len(changes), seconds=time.monotonic() - started)


# --- Broker only ---------------------------------------------------------------------------


def floor_exchange(system: BenchSystem) -> str:
    return f"{system.namespace}.bench-floor"


def floor_queue(system: BenchSystem, store_id: str) -> str:
    return f"{system.namespace}.bench-floor.{store_id}"


async def prepare_broker_floor(system: BenchSystem) -> None:
    """Declare the floor's exchange and one queue per store, bound as the store queues are."""
    exchange_name = floor_exchange(system)
    system.extra_exchanges.add(exchange_name)
    connection = await aio_pika.connect(system.broker_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for store_id in system.store_ids:
            name = floor_queue(system, store_id)
            system.extra_queues.add(name)
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "classic"}
            )
            await queue.bind(exchange, routing_key="resolved.*.all")
            await queue.bind(exchange, routing_key=f"resolved.*.{store_target(store_id)}")


def resolved_messages(
    workload: Workload, changes: Sequence[Change]
) -> list[tuple[aio_pika.Message, str]]:
    """Build the `record.resolved` message of each change, as the orchestrator would."""
    messages = []
    for change in changes:
        entity, record = change
        _, key = key_of(change)
        scope = workload.stores_of(entity, record)
        stores = list(scope) if scope != workload.store_ids else None
        envelope = Envelope(
            source="lojasync/sync-orchestrator",
            type=RECORD_RESOLVED,
            subject=f"{entity}/{key}",
            entity=entity,
            recordkey=key,
            revision=1,
            origin=ERP_ORIGIN,
            causationid=str(uuid.uuid4()),
            data={"deleted": False, "record": record, "stores": stores, "out_of_scope": False},
        )
        target = "all" if stores is None else store_target(stores[0])
        message = aio_pika.Message(
            envelope.to_bytes(),
            message_id=envelope.id,
            type=RECORD_RESOLVED,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        messages.append((message, resolved_key(entity, target)))
    return messages


async def _start_consumer(
    system: BenchSystem, store_id: str, expected: int
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.floor_consumer",
        "--broker-url",
        system.broker_url,
        "--queue",
        floor_queue(system, store_id),
        "--expected",
        str(expected),
        "--prefetch",
        str(PREFETCH),
        "--ack-every",
        str(ACK_EVERY),
        "--timeout",
        str(CONSUMER_TIMEOUT),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60.0)
    if line.strip() != b"ready":
        raise RuntimeError(f"the broker floor consumer of {store_id} did not start: {line!r}")
    return process


async def _consumer_result(process: asyncio.subprocess.Process, store_id: str) -> dict[str, Any]:
    assert process.stdout is not None
    output = await process.stdout.read()
    await process.wait()
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    if process.returncode != 0 or "finished_at" not in result:
        raise RuntimeError(f"the broker floor consumer of {store_id} failed: {result}")
    return result


async def _publish(
    exchange: AbstractExchange, messages: list[tuple[aio_pika.Message, str]]
) -> None:
    """Publish in rounds of PUBLISH_ROUND, each awaited until the broker confirmed it,
    as the outbox relay does."""
    for start in range(0, len(messages), PUBLISH_ROUND):
        round_ = messages[start : start + PUBLISH_ROUND]
        await asyncio.gather(
            *(exchange.publish(message, routing_key=key) for message, key in round_)
        )


async def run_broker_floor(system: BenchSystem, workload: Workload, index: int) -> TimedRun:
    """Publish slice `index` as resolved events and time it until the last consumer's
    last ack. The messages are built before the clock starts."""
    changes = workload.run_records(index)
    expected = {store: 0 for store in workload.store_ids}
    for entity, record in changes:
        for store in workload.stores_of(entity, record):
            expected[store] += 1
    messages = resolved_messages(workload, changes)

    consumers: dict[str, asyncio.subprocess.Process] = {}
    try:
        for store, count in expected.items():
            consumers[store] = await _start_consumer(system, store, count)
        connection = await aio_pika.connect(system.broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(floor_exchange(system))
            started = time.monotonic()
            await _publish(exchange, messages)
            results = [
                await _consumer_result(process, store) for store, process in consumers.items()
            ]
    finally:
        for process in consumers.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
    finished = max(float(result["finished_at"]) for result in results)
    return TimedRun(changes=len(changes), seconds=finished - started)
