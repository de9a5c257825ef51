"""Drift detection between the orchestrator's state and one store, and its repair.

Detection compares per-entity, per-bucket digests that each database computes (see
`lojasync.buckets`). Only the buckets whose digests differ are read row by row, on both
sides, and their rows are sorted into missing (the store should have the record and does
not), extra (the store has a record outside what it should have) and different (the
content hash differs).

Repair follows the policy. Where the ERP owns the entity, or the store is simply behind
(its revision is older), the orchestrator re-sends its authoritative state as a repair
batch. Where stores may edit the entity and the store holds a different version at the
same revision, the store's version was changed outside lojasync: the store raises it as a
change and the orchestrator decides it as it decides any store edit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.batch import BatchItem, BatchPurpose
from lojasync.buckets import bucket_count_for, bucket_query, bucket_rows_query
from lojasync.policy import Action, Policy
from sync_orchestrator.batches import BatchSender
from sync_orchestrator.models import RECORD_STATE

logger = logging.getLogger(__name__)

# Keys listed per entity and kind in a stored report; the counts are always complete.
REPORT_KEYS = 1000
# Records per request when a store raises its versions, and per state query.
RAISE_CHUNK = 1000
STATE_CHUNK = 5000

_EXPECTED = (
    "(SELECT entity, record_key, content_hash, revision FROM record_state"
    " WHERE NOT deleted AND content_hash IS NOT NULL"
    " AND (stores IS NULL OR CAST(:store_id AS TEXT) = ANY(stores))) AS expected"
)
_COUNT = text(
    "SELECT count(*) FROM record_state WHERE NOT deleted"
    " AND (stores IS NULL OR CAST(:store_id AS TEXT) = ANY(stores))"
)
_BUCKETS = text(bucket_query(_EXPECTED))
_BUCKET_ROWS = text(bucket_rows_query(_EXPECTED))


class StoreUnreachable(Exception):
    """The store's drift API did not respond; the message names the store and the error."""


@dataclass(frozen=True)
class RowVersion:
    content_hash: str
    revision: int


@dataclass
class EntityDrift:
    """The differences of one entity, with the revisions seen on each side."""

    missing: dict[str, RowVersion] = field(default_factory=dict)
    extra: dict[str, RowVersion] = field(default_factory=dict)
    different: dict[str, tuple[RowVersion, RowVersion]] = field(default_factory=dict)
    """Record key -> (the orchestrator's version, the store's version)."""

    @property
    def empty(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def as_dict(self) -> dict[str, Any]:
        def listed(keys: Sequence[str]) -> list[str]:
            return sorted(keys)[:REPORT_KEYS]

        return {
            "missing": len(self.missing),
            "extra": len(self.extra),
            "different": len(self.different),
            "missing_keys": listed(list(self.missing)),
            "extra_keys": listed(list(self.extra)),
            "different_keys": listed(list(self.different)),
            "truncated": max(len(self.missing), len(self.extra), len(self.different)) > REPORT_KEYS,
        }


@dataclass
class DriftReport:
    store_id: str
    bucket_count: int
    expected: dict[str, int]
    held: dict[str, int]
    differing_buckets: dict[str, int]
    entities: dict[str, EntityDrift]
    seconds: float = 0.0

    @property
    def differences(self) -> int:
        return sum(
            len(drift.missing) + len(drift.extra) + len(drift.different)
            for drift in self.entities.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "store_id": self.store_id,
            "in_sync": self.differences == 0,
            "differences": self.differences,
            "bucket_count": self.bucket_count,
            "seconds": round(self.seconds, 3),
            "entities": {
                entity: {
                    "expected": self.expected.get(entity, 0),
                    "held": self.held.get(entity, 0),
                    "differing_buckets": self.differing_buckets.get(entity, 0),
                    **drift.as_dict(),
                }
                for entity, drift in sorted(self.entities.items())
            },
        }


Buckets = dict[str, dict[int, tuple[int, str]]]


class DriftChecker:
    """Compares one store with the orchestrator and repairs the differences."""

    def __init__(
        self, engine: AsyncEngine, client: httpx.AsyncClient, sender: BatchSender, policy: Policy
    ) -> None:
        self.engine = engine
        self.client = client
        self.sender = sender
        self.policy = policy

    async def detect(self, store_id: str, api_url: str) -> DriftReport:
        started = time.perf_counter()
        async with self.engine.connect() as connection:
            expected_total = int(await connection.scalar(_COUNT, {"store_id": store_id}) or 0)
        bucket_count = bucket_count_for(expected_total)

        own, theirs = await asyncio.gather(
            self._own_buckets(store_id, bucket_count),
            self._store_buckets(api_url, store_id, bucket_count),
        )
        report = DriftReport(
            store_id=store_id,
            bucket_count=bucket_count,
            expected={entity: sum(c for c, _ in b.values()) for entity, b in own.items()},
            held={entity: sum(c for c, _ in b.values()) for entity, b in theirs.items()},
            differing_buckets={},
            entities={},
        )

        for entity in sorted(set(own) | set(theirs)):
            mine = own.get(entity, {})
            held = theirs.get(entity, {})
            differing = sorted(
                bucket for bucket in set(mine) | set(held) if mine.get(bucket) != held.get(bucket)
            )
            if not differing:
                continue
            report.differing_buckets[entity] = len(differing)
            report.entities[entity] = await self._drill_down(
                store_id, api_url, entity, bucket_count, differing
            )
        report.entities = {e: d for e, d in report.entities.items() if not d.empty}
        report.seconds = time.perf_counter() - started
        logger.info(
            "drift checked",
            extra={
                "store_id": store_id,
                "differences": report.differences,
                "seconds": round(report.seconds, 3),
            },
        )
        return report

    async def _own_buckets(self, store_id: str, bucket_count: int) -> Buckets:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                _BUCKETS, {"store_id": store_id, "bucket_count": bucket_count}
            )
            found: Buckets = {}
            for row in rows:
                found.setdefault(row.entity, {})[row.bucket] = (row.records, row.total)
        return found

    async def _store_buckets(self, api_url: str, store_id: str, bucket_count: int) -> Buckets:
        body = await self._store_call(
            "GET", api_url, store_id, "/v1/drift/buckets", params={"bucket_count": bucket_count}
        )
        found: Buckets = {}
        for entity, buckets in body["entities"].items():
            found[entity] = {int(b): (int(count), str(total)) for b, count, total in buckets}
        return found

    async def _store_call(
        self,
        method: str,
        api_url: str,
        store_id: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = f"{api_url.rstrip('/')}{path}"
        try:
            response = await self.client.request(method, url, params=params, json=json)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise StoreUnreachable(f"store {store_id} at {url}: {exc}") from exc
        body: dict[str, Any] = response.json()
        return body

    async def _drill_down(
        self, store_id: str, api_url: str, entity: str, bucket_count: int, buckets: list[int]
    ) -> EntityDrift:
        async def own_rows() -> dict[str, RowVersion]:
            async with self.engine.connect() as connection:
                rows = await connection.execute(
                    _BUCKET_ROWS,
                    {
                        "store_id": store_id,
                        "entity": entity,
                        "bucket_count": bucket_count,
                        "buckets": buckets,
                    },
                )
                return {row.record_key: RowVersion(row.content_hash, row.revision) for row in rows}

        async def store_rows() -> dict[str, RowVersion]:
            body = await self._store_call(
                "POST",
                api_url,
                store_id,
                "/v1/drift/rows",
                json={"entity": entity, "bucket_count": bucket_count, "buckets": buckets},
            )
            return {key: RowVersion(hash_, revision) for key, hash_, revision in body["rows"]}

        mine, held = await asyncio.gather(own_rows(), store_rows())
        drift = EntityDrift()
        for key, version in mine.items():
            other = held.get(key)
            if other is None:
                drift.missing[key] = version
            elif other.content_hash != version.content_hash:
                drift.different[key] = (version, other)
        for key, version in held.items():
            if key not in mine:
                drift.extra[key] = version
        return drift

    # --- Repair ---------------------------------------------------------------------------

    async def repair(
        self, operation_id: str, store_id: str, api_url: str, report: DriftReport
    ) -> dict[str, Any]:
        """Fix every difference in `report`; returns what was sent and what was raised."""
        items: list[BatchItem] = []
        to_raise: list[dict[str, Any]] = []
        for entity, drift in sorted(report.entities.items()):
            store_may_edit = self._store_may_edit(entity)
            states = await self._load_states(
                entity, [*drift.missing, *drift.different, *drift.extra]
            )

            for key in drift.missing:
                items.append(_authoritative(store_id, entity, key, states, expected_revision=None))
            for key, (mine, theirs) in drift.different.items():
                if store_may_edit and theirs.revision >= mine.revision:
                    to_raise.append(
                        {"entity": entity, "record_key": key, "base_revision": mine.revision}
                    )
                else:
                    items.append(
                        _authoritative(
                            store_id, entity, key, states, expected_revision=theirs.revision
                        )
                    )
            for key, theirs in drift.extra.items():
                if store_may_edit and (entity, key) not in states:
                    to_raise.append({"entity": entity, "record_key": key, "base_revision": 0})
                else:
                    items.append(
                        _authoritative(
                            store_id, entity, key, states, expected_revision=theirs.revision
                        )
                    )

        messages = 0
        if items:
            await self.sender.prepare(store_id)
            messages = await self.sender.send(
                store_id,
                items,
                purpose=BatchPurpose.REPAIR,
                operation_id=operation_id,
                first_sequence=0,
            )
        raised: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for start in range(0, len(to_raise), RAISE_CHUNK):
            body = await self._store_call(
                "POST",
                api_url,
                store_id,
                "/v1/drift/raise",
                json={"records": to_raise[start : start + RAISE_CHUNK]},
            )
            raised.extend(body["raised"])
            skipped.extend(body["skipped"])
        logger.info(
            "drift repaired",
            extra={
                "operation_id": operation_id,
                "store_id": store_id,
                "resent": len(items),
                "raised": len(raised),
            },
        )
        return {
            "resent": len(items),
            "messages": messages,
            "raised": len(raised),
            "raised_records": raised[:REPORT_KEYS],
            "skipped": skipped[:REPORT_KEYS],
            "detected": report.as_dict(),
        }

    def _store_may_edit(self, entity: str) -> bool:
        rules = self.policy.for_entity(entity)
        return rules.store_may(Action.EDIT) or rules.store_may(Action.CREATE)

    async def _load_states(self, entity: str, keys: Sequence[str]) -> dict[tuple[str, str], Any]:
        columns = RECORD_STATE.c
        query = select(
            columns.entity,
            columns.record_key,
            columns.revision,
            columns.deleted,
            columns.stores,
            columns.data,
        )
        states: dict[tuple[str, str], Any] = {}
        async with self.engine.connect() as connection:
            for start in range(0, len(keys), STATE_CHUNK):
                chunk = [(entity, key) for key in keys[start : start + STATE_CHUNK]]
                rows = await connection.execute(
                    query.where(tuple_(columns.entity, columns.record_key).in_(chunk))
                )
                states.update({(row.entity, row.record_key): row for row in rows})
        return states


def _authoritative(
    store_id: str,
    entity: str,
    key: str,
    states: dict[tuple[str, str], Any],
    *,
    expected_revision: int | None,
) -> BatchItem:
    """Build the repair item of a record: the orchestrator's data, or a deletion when the
    record is deleted, outside this store's scope or unknown to the orchestrator."""
    state = states.get((entity, key))
    if state is None:
        return BatchItem(
            entity,
            key,
            expected_revision or 0,
            deleted=True,
            expected_revision=expected_revision,
        )
    in_scope = (
        not state.deleted
        and state.data is not None
        and (state.stores is None or store_id in state.stores)
    )
    return BatchItem(
        entity,
        key,
        state.revision,
        deleted=not in_scope,
        record=state.data if in_scope else None,
        expected_revision=expected_revision,
    )
