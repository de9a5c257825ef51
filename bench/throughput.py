"""Sustained end-to-end throughput: bulk pushes to the gateway until every store has them.

A run pushes its slice of new products and prices in batches, one request after the
other as an ERP would. It polls each store's database until the product and price
counts reach what the store should hold. The run ends at the latest `updated_at` among
the stores' rows, so the polling interval does not inflate the duration.

NOTE: a store sets `updated_at` when it starts the transaction of a batch, before the
commit, so the measured duration is short by at most one store batch's transaction.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.polling import wait_until
from bench.results import TimedRun
from bench.system import GATEWAY, BenchSystem
from bench.workload import MEASURED_ENTITIES, Change, Workload, batches, push

# Each poll counts one store's rows with a sequential scan of its table, about 20 ms at
# 100,000 rows on the 2-CPU development machine. GET /v1/status would also compute the
# store's digests (65 ms at 100,000 rows), CPU taken from the run being measured. The
# end time comes from `updated_at`, so the interval does not change the figure.
STATUS_POLL_SECONDS = 2.0
# Applying a run at fewer than this many changes per second counts as stuck.
SLOWEST_RATE = 20.0
MIN_WAIT_SECONDS = 300.0

LAST_UPDATE = "SELECT max(updated_at) FROM store_record"


def wait_seconds(changes: int) -> float:
    """Return how long a run of `changes` may take before the bench gives up."""
    return max(MIN_WAIT_SECONDS, changes / SLOWEST_RATE)


# A store's confirmed records, counted as GET /v1/status counts them.
CONFIRMED_COUNTS = (
    "SELECT entity, count(*) FROM store_record"
    " WHERE entity = ANY($1::text[]) AND revision > 0 AND NOT deleted AND data IS NOT NULL"
    " AND content_hash IS NOT NULL"
    " GROUP BY entity"
)


async def store_counts(connection: asyncpg.Connection) -> dict[str, int]:
    """Return the confirmed product and price counts of one store's database."""
    rows = await connection.fetch(CONFIRMED_COUNTS, list(MEASURED_ENTITIES))
    found = {row["entity"]: int(row["count"]) for row in rows}
    return {entity: found.get(entity, 0) for entity in MEASURED_ENTITIES}


async def wait_for_stores(
    system: BenchSystem, expected: dict[str, dict[str, int]], timeout: float
) -> None:
    """Poll every store until its count of each entity reaches `expected`."""
    for store_id, counts in expected.items():
        connection = await asyncpg.connect(system.store_dsn(store_id))
        try:
            await _wait_for_store(connection, store_id, counts, timeout)
        finally:
            await connection.close()


async def _wait_for_store(
    connection: asyncpg.Connection, store_id: str, counts: dict[str, int], timeout: float
) -> None:
    async def probe() -> dict[str, int]:
        return await store_counts(connection)

    def reached(found: dict[str, int]) -> bool:
        return all(found[entity] >= count for entity, count in counts.items())

    await wait_until(
        probe,
        reached,
        timeout=timeout,
        interval=STATUS_POLL_SECONDS,
        description=f"{store_id} holding {counts}",
    )


async def last_store_update(system: BenchSystem) -> datetime:
    """Return the latest `updated_at` over the rows of every store."""
    latest: datetime | None = None
    for store_id in system.store_ids:
        connection = await asyncpg.connect(system.store_dsn(store_id))
        try:
            value: datetime | None = await connection.fetchval(LAST_UPDATE)
        finally:
            await connection.close()
        if value is not None and (latest is None or value > latest):
            latest = value
    if latest is None:
        raise RuntimeError(
            "no store contains a record, so the run applied nothing; see the service logs"
        )
    return latest


async def push_all(
    client: httpx.AsyncClient, gateway_url: str, changes: list[Change], batch_size: int
) -> int:
    """Push `changes` in batches, one request after the other; return the accepted count."""
    accepted = 0
    for batch in batches(changes, batch_size):
        accepted += (await push(client, gateway_url, batch)).accepted
    return accepted


async def run_throughput(
    system: BenchSystem, workload: Workload, index: int, *, batch_size: int
) -> TimedRun:
    """Push slice `index` and time it until every store in scope applied every change."""
    changes = workload.run_records(index)
    expected = workload.expected_store_counts(index + 1)

    async with httpx.AsyncClient(timeout=300.0) as client:
        started_wall = datetime.now(UTC)
        started = time.monotonic()
        await push_all(client, system.url(GATEWAY), changes, batch_size)
        push_seconds = time.monotonic() - started
    await wait_for_stores(system, expected, wait_seconds(len(changes)))

    finished_wall = await last_store_update(system)
    seconds = (finished_wall - started_wall).total_seconds()
    return TimedRun(changes=len(changes), seconds=seconds, push_seconds=push_seconds)
