"""Memory of a store registry that drains a large backlog.

A fourth store registry (`backlog`) starts once, so it declares and binds its queue, and
stops. The bench then publishes N `record.resolved` events of new products to that store
alone, starts it again and samples its VmRSS every 0.5 s while it drains the queue. The
consumer's prefetch (LOJASYNC_PREFETCH) bounds the messages in the store's memory, so
the peak should not grow with N.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import aio_pika
import asyncpg

from bench.memory import RssSampler, read_status_kib
from bench.polling import wait_until
from bench.results import BacklogResult
from bench.system import BenchSystem, store_service_name
from bench.workload import Workload
from lojasync.envelope import ERP_ORIGIN, RECORD_RESOLVED, Envelope, resolved_key, store_target
from lojasync.persistence import ensure_database
from lojasync_demo.processes import ProcessGroup

BACKLOG_STORE = "backlog"
PUBLISH_ROUND = 1000
SAMPLE_SECONDS = 0.5
POLL_SECONDS = 0.5
# Draining at fewer than this many events per second counts as stuck.
SLOWEST_RATE = 50.0

_APPLIED = "SELECT count(*) FROM store_record WHERE entity = 'product'"
_SPAN = "SELECT min(updated_at), max(updated_at) FROM store_record WHERE entity = 'product'"


def _event(product: dict[str, object], number: int) -> bytes:
    code = f"B{number:07d}"
    record = {**product, "code": code}
    envelope = Envelope(
        source="lojasync/sync-orchestrator",
        type=RECORD_RESOLVED,
        subject=f"product/{code}",
        entity="product",
        recordkey=code,
        revision=1,
        origin=ERP_ORIGIN,
        causationid=str(uuid.uuid4()),
        data={"deleted": False, "record": record, "stores": None, "out_of_scope": False},
    )
    return envelope.to_bytes()


async def _fill_queue(system: BenchSystem, workload: Workload, events: int) -> float:
    """Publish `events` resolved products to the backlog store; return the seconds taken."""
    products = workload.catalog.records["product"]
    routing_key = resolved_key("product", store_target(BACKLOG_STORE))
    connection = await aio_pika.connect(system.broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(system.namespace)
        started = time.monotonic()
        for start in range(0, events, PUBLISH_ROUND):
            numbers = range(start, min(start + PUBLISH_ROUND, events))
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            _event(products[number % len(products)], number),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            type=RECORD_RESOLVED,
                            content_type="application/cloudevents+json",
                        ),
                        routing_key=routing_key,
                    )
                    for number in numbers
                )
            )
        return time.monotonic() - started


async def _applied(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(_APPLIED))
    finally:
        await connection.close()


async def _span(dsn: str) -> tuple[datetime, datetime]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(_SPAN)
    finally:
        await connection.close()
    assert row is not None
    return row[0], row[1]


async def run_backlog(system: BenchSystem, workload: Workload, events: int) -> BacklogResult:
    """Fill the stopped backlog store's queue with `events`, then time and sample its drain."""
    group = ProcessGroup()
    database = system.database_url(store_service_name(BACKLOG_STORE))
    await ensure_database(database)
    dsn = system.store_dsn(BACKLOG_STORE)
    try:
        await group.start(system.store_process(BACKLOG_STORE, log_name="store-registry-backlog-1"))
        await group.wait_ready(120.0)
        await group.stop()

        fill_seconds = await _fill_queue(system, workload, events)

        drain = system.store_process(BACKLOG_STORE, log_name="store-registry-backlog-2")
        started = time.monotonic()
        await group.start(drain)
        assert drain.process is not None
        pid = drain.process.pid
        sampler = RssSampler(pid, SAMPLE_SECONDS)
        sampler.start()
        try:
            await wait_until(
                lambda: _applied(dsn),
                lambda applied: applied >= events,
                timeout=max(600.0, events / SLOWEST_RATE),
                interval=POLL_SECONDS,
                description=f"the backlog store applying {events:,} events",
            )
            wall_seconds = time.monotonic() - started
            peak_kib = read_status_kib(pid, "VmHWM")
        finally:
            samples = await sampler.stop()
    finally:
        await group.stop()

    first, last = await _span(dsn)
    span = (last - first).total_seconds()
    return BacklogResult(
        events=events,
        fill_seconds=fill_seconds,
        # A backlog applied in one batch has no span between its first and last row.
        drain_seconds=span if span > 0 else wall_seconds,
        wall_seconds=wall_seconds,
        rss_samples_kib=tuple(samples),
        peak_rss_kib=peak_kib,
    )
