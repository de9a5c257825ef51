"""Propagation latency at a fixed offered load.

Pushes of `push_size` changes start on a fixed timetable (`push_size / rate` seconds
apart) whether or not the previous push has returned, so a slow gateway does not lower
the offered load. Each change is one record changed once, and every store receives
every record of the run.

A change's latency runs from the `time` attribute of its `record.changed` envelope (set
by the gateway when it accepts the record, before its transaction commits) to the latest
`updated_at` of that record among the stores, read from each store's database. A tap
queue bound to `changed.product.erp` and `changed.price.erp` delivers the envelopes to
the bench. Both clocks are the machine's wall clock.

The orchestrator's `event_log.recorded_at` of each decision splits the latency in two:
from the gateway to the orchestrator's decision, and from the decision to the last store.

NOTE: a store sets `updated_at` when it starts the transaction of a batch, and the
orchestrator sets `recorded_at` while it decides, both before their commit, so each time
is early by up to one batch's transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import aio_pika
import asyncpg
import httpx
import orjson
from aio_pika.abc import AbstractIncomingMessage

from bench.polling import wait_until
from bench.results import LatencyRun
from bench.stats import rate, summarize_latencies
from bench.system import GATEWAY, ORCHESTRATOR, BenchSystem, asyncpg_dsn
from bench.workload import Change, PushResult, key_of, push
from lojasync.packing import BATCH_CONTENT_TYPE

RecordId = tuple[str, str]

POLL_SECONDS = 0.5
DRAIN_TIMEOUT_SECONDS = 600.0
TAP_BINDINGS = ("changed.product.erp", "changed.price.erp")

_UPDATED_SINCE = "SELECT count(*) FROM store_record WHERE updated_at >= $1"
_ROWS_SINCE = "SELECT entity, record_key, updated_at FROM store_record WHERE updated_at >= $1"
_DECISIONS_SINCE = (
    "SELECT causation_id, recorded_at FROM event_log WHERE kind = 'resolved' AND recorded_at >= $1"
)


class EnvelopeTap:
    """Collects the `time` of every `record.changed` envelope the gateway publishes."""

    def __init__(self, system: BenchSystem) -> None:
        self._system = system
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self.times: dict[RecordId, datetime] = {}
        self.event_ids: dict[RecordId, str] = {}

    @property
    def queue_name(self) -> str:
        return f"{self._system.namespace}.bench-tap"

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self._system.broker_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue(self.queue_name, exclusive=True, auto_delete=True)
        for pattern in TAP_BINDINGS:
            await queue.bind(self._system.namespace, routing_key=pattern)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        decoded = orjson.loads(message.body)
        # The outbox relay packs events into JSON arrays; see lojasync.packing.
        events = decoded if message.content_type == BATCH_CONTENT_TYPE else [decoded]
        for event in events:
            record_id = (str(event["entity"]), str(event["recordkey"]))
            self.times[record_id] = datetime.fromisoformat(event["time"])
            self.event_ids[record_id] = str(event["id"])

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


async def _count_updated(dsns: Sequence[str], since: datetime) -> list[int]:
    counts = []
    for dsn in dsns:
        connection = await asyncpg.connect(dsn)
        try:
            counts.append(int(await connection.fetchval(_UPDATED_SINCE, since)))
        finally:
            await connection.close()
    return counts


async def _last_updates(dsns: Sequence[str], since: datetime) -> dict[RecordId, datetime]:
    """Return, per record, the latest `updated_at` since `since` among the stores."""
    latest: dict[RecordId, datetime] = {}
    for dsn in dsns:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(_ROWS_SINCE, since)
        finally:
            await connection.close()
        for row in rows:
            record_id = (row["entity"], row["record_key"])
            if record_id not in latest or row["updated_at"] > latest[record_id]:
                latest[record_id] = row["updated_at"]
    return latest


async def _decision_times(dsn: str, since: datetime) -> dict[str, datetime]:
    """Return when the orchestrator resolved each change, by the change's event id."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(_DECISIONS_SINCE, since)
    finally:
        await connection.close()
    return {row["causation_id"]: row["recorded_at"] for row in rows}


async def _push_on_timetable(
    client: httpx.AsyncClient, gateway_url: str, pushes: list[Sequence[Change]], interval: float
) -> tuple[list[PushResult], int, float]:
    """Start push i at `i * interval` seconds; return the results, the late pushes and the
    monotonic start of the timetable."""
    tasks: list[asyncio.Task[PushResult]] = []
    late = 0
    started = time.monotonic()
    for number, changes in enumerate(pushes):
        scheduled = started + number * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > interval:
            late += 1
        tasks.append(asyncio.create_task(push(client, gateway_url, changes)))
    results = await asyncio.gather(*tasks)
    return list(results), late, started


async def run_latency(
    system: BenchSystem,
    changes: Sequence[Change],
    *,
    offered_rate: float,
    push_size: int,
) -> LatencyRun:
    """Push `changes` at `offered_rate` changes/s and measure each one's latency."""
    interval = push_size / offered_rate
    pushes = [changes[start : start + push_size] for start in range(0, len(changes), push_size)]
    dsns = [system.store_dsn(store) for store in system.store_ids]
    tap = EnvelopeTap(system)
    await tap.start()
    try:
        since = datetime.now(UTC)
        # httpx's default pool of 100 connections lets 100 pushes wait for the gateway at
        # once before a new push would queue in the client and start late.
        async with httpx.AsyncClient(timeout=120.0) as client:
            results, late, started = await _push_on_timetable(
                client, system.url(GATEWAY), pushes, interval
            )
        accepted = sum(result.accepted for result in results)
        await wait_until(
            lambda: _count_updated(dsns, since),
            lambda counts: all(count >= len(changes) for count in counts),
            timeout=DRAIN_TIMEOUT_SECONDS,
            interval=POLL_SECONDS,
            description=f"every store applying the {len(changes):,} changes of the latency run",
        )
        expected_ids = {key_of(change) for change in changes}
        await wait_until(
            lambda: _tap_count(tap, expected_ids),
            lambda seen: seen >= len(expected_ids),
            timeout=60.0,
            interval=POLL_SECONDS,
            description="the tap receiving every record.changed envelope",
        )
    finally:
        await tap.stop()

    applied = await _last_updates(dsns, since)
    decided = await _decision_times(asyncpg_dsn(system.database_url(ORCHESTRATOR)), since)
    latencies = []
    to_decision = []
    decision_to_stores = []
    for record_id in expected_ids:
        accepted_at = tap.times[record_id]
        decided_at = decided[tap.event_ids[record_id]]
        latencies.append((applied[record_id] - accepted_at).total_seconds())
        to_decision.append((decided_at - accepted_at).total_seconds())
        decision_to_stores.append((applied[record_id] - decided_at).total_seconds())
    last_response = max(result.returned_at for result in results)
    last_response_wall = max(result.returned_wall for result in results)
    return LatencyRun(
        offered_rate=offered_rate,
        achieved_rate=rate(accepted, last_response - started),
        changes=len(changes),
        latency=summarize_latencies(latencies),
        to_decision=summarize_latencies(to_decision),
        decision_to_stores=summarize_latencies(decision_to_stores),
        push_round_trip=summarize_latencies(
            [result.returned_at - result.sent_at for result in results]
        ),
        late_pushes=late,
        drain_seconds=(max(applied.values()) - last_response_wall).total_seconds(),
    )


async def _tap_count(tap: EnvelopeTap, expected_ids: set[RecordId]) -> int:
    return sum(1 for record_id in expected_ids if record_id in tap.times)
