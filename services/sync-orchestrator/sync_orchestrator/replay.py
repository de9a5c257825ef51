"""Replay: send resolved events from the event log to one store again.

The events are chosen by store scope, entity, record keys, a revision range and a time
range, read in log order and sent as `record.batch` messages. A store applies only
revisions newer than the ones it holds, so a replay repeats safely and changes nothing
in a store that is up to date. An event that removed a record from this store's scope
is not replayed, because the log keeps the stores it went to, not the ones it left.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.batch import BatchItem, BatchPurpose
from sync_orchestrator.batches import BatchSender
from sync_orchestrator.operations import OperationLog

logger = logging.getLogger(__name__)

# Rows read from the event log per round trip, and sent per round.
PAGE_ROWS = 5000
# Events a dry run lists; the counts cover all of them.
DRY_RUN_SAMPLE = 50


@dataclass(frozen=True)
class ReplayFilter:
    """The filter of resolved events to replay to `store_id`; None sets no limit on that axis."""

    store_id: str
    entities: list[str] | None = None
    record_keys: list[str] | None = None
    from_revision: int | None = None
    to_revision: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_parameters(self) -> dict[str, Any]:
        parameters = asdict(self)
        for name in ("since", "until"):
            value = parameters[name]
            parameters[name] = value.isoformat() if value is not None else None
        return parameters


def _where(replay: ReplayFilter) -> tuple[str, dict[str, Any]]:
    clauses = [
        "kind = 'resolved'",
        "(stores IS NULL OR CAST(:store_id AS TEXT) = ANY(stores))",
    ]
    values: dict[str, Any] = {"store_id": replay.store_id}
    if replay.entities:
        clauses.append("entity = ANY(CAST(:entities AS TEXT[]))")
        values["entities"] = replay.entities
    if replay.record_keys:
        clauses.append("record_key = ANY(CAST(:record_keys AS TEXT[]))")
        values["record_keys"] = replay.record_keys
    if replay.from_revision is not None:
        clauses.append("revision >= :from_revision")
        values["from_revision"] = replay.from_revision
    if replay.to_revision is not None:
        clauses.append("revision <= :to_revision")
        values["to_revision"] = replay.to_revision
    if replay.since is not None:
        clauses.append("recorded_at >= :since")
        values["since"] = replay.since
    if replay.until is not None:
        clauses.append("recorded_at <= :until")
        values["until"] = replay.until
    return " AND ".join(clauses), values


@dataclass
class ReplaySummary:
    """The events a replay sent (or, in a dry run, would send)."""

    events: int = 0
    messages: int = 0
    per_entity: dict[str, int] = field(default_factory=dict)
    first_seq: int | None = None
    last_seq: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: Any, keep_sample: bool) -> None:
        self.events += 1
        self.per_entity[row.entity] = self.per_entity.get(row.entity, 0) + 1
        if self.first_seq is None:
            self.first_seq = row.seq
        self.last_seq = row.seq
        if keep_sample and len(self.sample) < DRY_RUN_SAMPLE:
            self.sample.append(
                {
                    "seq": row.seq,
                    "entity": row.entity,
                    "record_key": row.record_key,
                    "revision": row.revision,
                    "deleted": row.deleted,
                    "recorded_at": row.recorded_at.isoformat(),
                }
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Replayer:
    def __init__(self, engine: AsyncEngine, sender: BatchSender, log: OperationLog) -> None:
        self.engine = engine
        self.sender = sender
        self.log = log

    async def count(self, replay: ReplayFilter) -> int:
        where, values = _where(replay)
        async with self.engine.connect() as connection:
            total = await connection.scalar(
                text(f"SELECT count(*) FROM event_log WHERE {where}"), values
            )
        return int(total or 0)

    async def run(
        self, operation_id: str, replay: ReplayFilter, *, dry_run: bool
    ) -> dict[str, Any]:
        """Send (or with `dry_run`, only count and list) the chosen events, in log order."""
        total = await self.count(replay)
        await self.log.progress(operation_id, done=0, total=total)
        if not dry_run:
            await self.sender.prepare(replay.store_id)

        where, values = _where(replay)
        query = text(
            "SELECT seq, entity, record_key, revision, deleted, causation_id, recorded_at,"
            " CAST(data AS TEXT) AS data_json"
            f" FROM event_log WHERE {where} AND seq > :after_seq ORDER BY seq LIMIT :page_rows"
        )
        summary = ReplaySummary()
        after_seq = 0
        while True:
            async with self.engine.connect() as connection:
                rows = (
                    await connection.execute(
                        query, {**values, "after_seq": after_seq, "page_rows": PAGE_ROWS}
                    )
                ).all()
            if not rows:
                break
            for row in rows:
                summary.add(row, keep_sample=dry_run)
            after_seq = rows[-1].seq
            if not dry_run:
                items = [_item(row) for row in rows]
                summary.messages += await self.sender.send(
                    replay.store_id,
                    items,
                    purpose=BatchPurpose.REPLAY,
                    operation_id=operation_id,
                    first_sequence=summary.messages,
                )
            await self.log.progress(operation_id, done=summary.events)

        logger.info(
            "replay finished",
            extra={
                "operation_id": operation_id,
                "store_id": replay.store_id,
                "events": summary.events,
                "messages": summary.messages,
                "dry_run": dry_run,
            },
        )
        return summary.as_dict()


def _item(row: Any) -> BatchItem:
    return BatchItem(
        entity=row.entity,
        record_key=row.record_key,
        revision=row.revision,
        deleted=row.deleted or row.data_json is None,
        record_json=row.data_json,
        causation_id=row.causation_id,
    )
