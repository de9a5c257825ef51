"""The orchestrator's message handlers: decide a batch of changes in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from lojasync.catalog import ENTITIES, validate_record
from lojasync.digest import content_hash
from lojasync.envelope import (
    ALL_STORES_TARGET,
    ERP_ORIGIN,
    ERP_TARGET,
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    STORE_ANNOUNCED,
    Envelope,
    origin_store_id,
    rejected_key,
    resolved_key,
    serialize_event,
    store_target,
)
from lojasync.ids import derived_id, new_id
from lojasync.messaging import PermanentFailure
from lojasync.persistence import (
    POSTGRESQL,
    OutgoingEvent,
    Upsert,
    array_parameter,
    dialect_of,
    fetch_by_record_ids,
    record_inbox,
    utc_now,
    write_together,
)
from lojasync.pg_array import array_text
from lojasync.policy import Owner, Policy, ScopeFromDistribution
from lojasync.reference import ReferenceTables
from lojasync.service import ServiceRuntime
from sync_orchestrator.domain import (
    Accepted,
    Change,
    CurrentRecord,
    MissingScopeParent,
    Rejected,
    decide,
    scope_of,
)
from sync_orchestrator.models import EVENT_LOG, KNOWN_STORE, RECORD_STATE

logger = logging.getLogger(__name__)

SOURCE = "lojasync/sync-orchestrator"
RecordId = tuple[str, str]


def _parent_scopes(key_matches: ColumnElement[bool]) -> Select[Any]:
    """Return a query of the live parents among the `keys` parameter, with their stores."""
    return select(RECORD_STATE.c.record_key, RECORD_STATE.c.stores).where(
        RECORD_STATE.c.entity == bindparam("entity"),
        key_matches,
        RECORD_STATE.c.deleted.is_(False),
    )


# Built once, for each dialect: SQLAlchemy computes the cache key of every new statement
# object. PostgreSQL takes the keys as one array, whatever their number.
_PARENT_SCOPES = _parent_scopes(RECORD_STATE.c.record_key.in_(bindparam("keys", expanding=True)))
_PARENT_SCOPES_POSTGRESQL = _parent_scopes(
    RECORD_STATE.c.record_key == any_(array_parameter("keys", Text))
)


def parse_change(envelope: Envelope, policy: Policy) -> Change:
    """Read a `record.changed` event, raising PermanentFailure when it is malformed."""

    def fail(reason: str) -> PermanentFailure:
        return PermanentFailure(envelope.id, f"invalid record.changed: {reason}")

    if envelope.entity not in ENTITIES or envelope.entity not in policy.entities:
        raise fail(f"unknown entity {envelope.entity!r}")
    if not envelope.recordkey:
        raise fail("the recordkey attribute is missing")
    origin = envelope.origin or ""
    if origin != ERP_ORIGIN and not origin_store_id(origin):
        raise fail(f"origin {origin!r} is neither 'erp' nor 'store:<id>'")
    action = envelope.data.get("action", "upsert")
    if action not in ("upsert", "delete"):
        raise fail(f"data.action {action!r} is neither 'upsert' nor 'delete'")
    fields = envelope.data.get("fields", {})
    if not isinstance(fields, dict):
        raise fail("data.fields is not an object")
    if action == "upsert" and not fields:
        raise fail("data.fields is empty")

    return Change(
        event_id=envelope.id,
        entity=envelope.entity,
        record_key=envelope.recordkey,
        origin=origin,
        action=None,
        deleting=action == "delete",
        fields=fields,
        base_revision=envelope.baserevision,
        correlation_id=envelope.correlationid,
    )


@dataclass
class _Batch:
    """State that one batch loads, and the rows and events it writes."""

    states: dict[RecordId, CurrentRecord]
    parent_scopes: dict[str, dict[str, list[str] | None]]
    touched: dict[RecordId, tuple[CurrentRecord, str]] = field(default_factory=dict)
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    outgoing: list[OutgoingEvent] = field(default_factory=list)
    known_stores: list[str] | None = None
    # The time of the batch's rows; they are written in one transaction.
    now: datetime = field(default_factory=utc_now)


class ChangeHandler:
    """Decides `record.changed` events and records `store.announced` ones."""

    def __init__(self, runtime: ServiceRuntime, policy: Policy, tables: ReferenceTables) -> None:
        self._runtime = runtime
        self._policy = policy
        self._tables = tables

    def _validate(self, entity: str, data: Mapping[str, object]) -> dict[str, Any]:
        return validate_record(entity, data, self._tables)

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            if envelope.type not in (RECORD_CHANGED, STORE_ANNOUNCED):
                raise PermanentFailure(
                    envelope.id,
                    f"unexpected event type {envelope.type!r} on the orchestrator queue",
                )

        async with self._runtime.transaction() as connection:
            new_ids = await record_inbox(connection, [envelope.id for envelope in envelopes])
            fresh = [envelope for envelope in envelopes if envelope.id in new_ids]
            announcements = [e for e in fresh if e.type == STORE_ANNOUNCED]
            changes = [parse_change(e, self._policy) for e in fresh if e.type == RECORD_CHANGED]

            await self._record_announcements(connection, announcements)
            if changes:
                await self._decide_all(connection, changes)

        skipped = len(envelopes) - len(new_ids)
        if skipped:
            logger.info("skipped events already applied", extra={"events": skipped})

    async def _record_announcements(
        self, connection: AsyncConnection, announcements: Sequence[Envelope]
    ) -> None:
        for envelope in announcements:
            store_id = envelope.data.get("store_id")
            api_url = envelope.data.get("api_url")
            if not isinstance(store_id, str) or not isinstance(api_url, str):
                raise PermanentFailure(
                    envelope.id, "store.announced needs data.store_id and data.api_url"
                )
            await _SAVE_STORE.execute(
                connection, [{"store_id": store_id, "api_url": api_url, "last_seen": utc_now()}]
            )
            logger.info("store announced", extra={"store_id": store_id, "api_url": api_url})

    async def _decide_all(self, connection: AsyncConnection, changes: Sequence[Change]) -> None:
        states = await _load_states(connection, {(c.entity, c.record_key) for c in changes})
        batch = _Batch(states=states, parent_scopes={})
        await self._load_parent_scopes(connection, changes, batch)

        for change in changes:
            await self._decide_one(connection, change, batch)

        await _write(connection, batch)

    async def _decide_one(self, connection: AsyncConnection, change: Change, batch: _Batch) -> None:
        rules = self._policy.for_entity(change.entity)
        record_id = (change.entity, change.record_key)
        current = batch.states.get(record_id)

        base_data = None
        if (
            current is not None
            and change.base_revision is not None
            and 0 < change.base_revision < current.revision
        ):
            base_data = await _load_revision(
                connection, change.entity, change.record_key, change.base_revision
            )

        decision = decide(rules, change, current, base_data, self._validate)
        stores: list[str] | None = None
        if isinstance(decision, Accepted):
            try:
                stores = scope_of(
                    rules,
                    decision.data,
                    decision.owner_store,
                    self._parent_scopes_for(rules, batch),
                )
            except MissingScopeParent as missing:
                decision = missing.rejection(change)

        if isinstance(decision, Rejected):
            self._reject(change, decision, current, batch)
            return
        if decision.unchanged and change.origin == ERP_ORIGIN:
            logger.debug("unchanged record skipped", extra={"event_id": change.event_id})
            return

        await self._accept(connection, change, decision, stores, current, batch)

    def _parent_scopes_for(self, rules: Any, batch: _Batch) -> dict[str, list[str] | None]:
        distribution = rules.distribution
        if isinstance(distribution, ScopeFromDistribution):
            return batch.parent_scopes.setdefault(distribution.scope_from.entity, {})
        return {}

    async def _load_parent_scopes(
        self, connection: AsyncConnection, changes: Sequence[Change], batch: _Batch
    ) -> None:
        wanted: dict[str, set[str]] = {}
        for change in changes:
            distribution = self._policy.for_entity(change.entity).distribution
            if not isinstance(distribution, ScopeFromDistribution):
                continue
            parent = distribution.scope_from
            keys = wanted.setdefault(parent.entity, set())
            value = change.fields.get(parent.field)
            current = batch.states.get((change.entity, change.record_key))
            if value is None and current is not None and current.data is not None:
                value = current.data.get(parent.field)
            if value is not None:
                keys.add(str(value))
        postgresql = dialect_of(connection) == POSTGRESQL
        statement = _PARENT_SCOPES_POSTGRESQL if postgresql else _PARENT_SCOPES
        for parent_entity, keys in wanted.items():
            ordered = sorted(keys)
            rows = await connection.execute(
                statement,
                {"entity": parent_entity, "keys": array_text(ordered) if postgresql else ordered},
            )
            batch.parent_scopes[parent_entity] = {row.record_key: row.stores for row in rows}

    async def _accept(
        self,
        connection: AsyncConnection,
        change: Change,
        decision: Accepted,
        stores: list[str] | None,
        current: CurrentRecord | None,
        batch: _Batch,
    ) -> None:
        rules = self._policy.for_entity(change.entity)
        revision = (current.revision if current else 0) + 1
        to_erp = rules.owner is not Owner.ERP and (
            origin_store_id(change.origin) is not None
            or _erp_copy_differs(change.fields, decision.data)
        )
        state = CurrentRecord(
            revision=revision,
            data=decision.data,
            deleted=decision.deleted,
            stores=stores,
            owner_store=decision.owner_store,
            field_origins=decision.field_origins,
            erp_base=decision.erp_base,
        )
        record_id = (change.entity, change.record_key)
        batch.states[record_id] = state
        batch.touched[record_id] = (state, change.origin)
        self._update_parent_scope(change, state, batch)

        decision_id = new_id()
        removed = await self._stores_leaving_scope(connection, current, stores, batch)
        batch.log_rows.append(
            {
                "event_id": decision_id,
                "kind": "resolved",
                "entity": change.entity,
                "record_key": change.record_key,
                "revision": revision,
                "origin": change.origin,
                "causation_id": change.event_id,
                "correlation_id": change.correlation_id,
                "deleted": decision.deleted,
                "data": decision.data,
                "stores": stores,
                "reason": {"overridden": list(decision.overridden)}
                if decision.overridden
                else None,
                "recorded_at": batch.now,
            }
        )

        for store_id in [*(stores or []), *removed]:
            await self._runtime.broker.ensure_store_queue(store_id)
        targets = [ALL_STORES_TARGET] if stores is None else [store_target(s) for s in stores]
        if to_erp:
            targets.append(ERP_TARGET)
        for target in targets:
            batch.outgoing.append(
                _resolved_event(
                    change,
                    decision_id,
                    target,
                    revision,
                    decision.data,
                    decision.deleted,
                    stores,
                    False,
                )
            )
        for store_id in removed:
            batch.outgoing.append(
                _resolved_event(
                    change,
                    decision_id,
                    store_target(store_id),
                    revision,
                    decision.data,
                    True,
                    stores,
                    True,
                )
            )
        logger.debug(
            "change resolved",
            extra={
                "event_id": change.event_id,
                "entity": change.entity,
                "record_key": change.record_key,
                "revision": revision,
                "origin": change.origin,
            },
        )

    def _update_parent_scope(self, change: Change, state: CurrentRecord, batch: _Batch) -> None:
        scopes = batch.parent_scopes.get(change.entity)
        if scopes is None:
            return
        if state.deleted:
            scopes.pop(change.record_key, None)
        else:
            scopes[change.record_key] = state.stores

    async def _stores_leaving_scope(
        self,
        connection: AsyncConnection,
        current: CurrentRecord | None,
        stores: list[str] | None,
        batch: _Batch,
    ) -> list[str]:
        if current is None or current.deleted or stores is None:
            return []
        if current.stores is not None:
            return sorted(set(current.stores) - set(stores))
        if batch.known_stores is None:
            rows = await connection.execute(select(KNOWN_STORE.c.store_id))
            batch.known_stores = [row.store_id for row in rows]
        return sorted(set(batch.known_stores) - set(stores))

    def _reject(
        self, change: Change, rejection: Rejected, current: CurrentRecord | None, batch: _Batch
    ) -> None:
        store_id = origin_store_id(change.origin)
        target = ERP_TARGET if store_id is None else store_target(store_id)
        exists = current is not None and not current.deleted
        # A store is sent the authoritative record only if it may hold it; a store that
        # edited a record outside its scope (another store's operator) must drop it.
        visible = (
            exists
            and current is not None
            and (store_id is None or current.stores is None or store_id in current.stores)
        )
        event = Envelope(
            source=SOURCE,
            type=RECORD_REJECTED,
            subject=f"{change.entity}/{change.record_key}",
            entity=change.entity,
            recordkey=change.record_key,
            revision=current.revision
            if visible and current is not None and current.revision > 0
            else None,
            origin=change.origin,
            correlationid=change.correlation_id,
            causationid=change.event_id,
            data={
                **rejection.as_dict(),
                "current": current.data if visible and current is not None else None,
                "deleted": bool(current and current.deleted),
                "out_of_scope": exists and not visible,
            },
        )
        batch.outgoing.append(
            OutgoingEvent(
                event.id, rejected_key(change.entity, target), RECORD_REJECTED, event.to_bytes()
            )
        )
        batch.log_rows.append(
            {
                "event_id": event.id,
                "kind": "rejected",
                "entity": change.entity,
                "record_key": change.record_key,
                "revision": None,
                "origin": change.origin,
                "causation_id": change.event_id,
                "correlation_id": change.correlation_id,
                "deleted": False,
                "data": change.fields or None,
                "stores": None,
                "reason": rejection.as_dict(),
                "recorded_at": batch.now,
            }
        )
        logger.info(
            "change rejected",
            extra={
                "event_id": change.event_id,
                "entity": change.entity,
                "record_key": change.record_key,
                "origin": change.origin,
                "code": rejection.code,
            },
        )


def _erp_copy_differs(pushed: dict[str, Any], decided: dict[str, Any]) -> bool:
    """Tell whether an ERP change was merged into something other than what the ERP sent."""
    return any(decided.get(name) != value for name, value in pushed.items())


def _resolved_event(
    change: Change,
    decision_id: str,
    target: str,
    revision: int,
    data: dict[str, Any],
    deleted: bool,
    stores: list[str] | None,
    out_of_scope: bool,
) -> OutgoingEvent:
    event_id = derived_id(decision_id, target)
    body = serialize_event(
        id=event_id,
        source=SOURCE,
        type=RECORD_RESOLVED,
        subject=f"{change.entity}/{change.record_key}",
        entity=change.entity,
        recordkey=change.record_key,
        revision=revision,
        origin=change.origin,
        correlationid=change.correlation_id,
        causationid=change.event_id,
        data={"deleted": deleted, "record": data, "stores": stores, "out_of_scope": out_of_scope},
    )
    return OutgoingEvent(event_id, resolved_key(change.entity, target), RECORD_RESOLVED, body)


async def _load_states(
    connection: AsyncConnection, record_ids: Iterable[RecordId]
) -> dict[RecordId, CurrentRecord]:
    ids = sorted(record_ids)
    if not ids:
        return {}
    rows = await fetch_by_record_ids(connection, RECORD_STATE, ids, for_update=True)
    return {
        (row.entity, row.record_key): CurrentRecord(
            revision=row.revision,
            data=row.data,
            deleted=row.deleted,
            stores=row.stores,
            owner_store=row.owner_store,
            field_origins=row.field_origins or {},
            erp_base=row.erp_base,
        )
        for row in rows
    }


async def _load_revision(
    connection: AsyncConnection, entity: str, record_key: str, revision: int
) -> dict[str, Any] | None:
    columns = EVENT_LOG.c
    row = await connection.execute(
        select(columns.data).where(
            and_(
                columns.entity == entity,
                columns.record_key == record_key,
                columns.revision == revision,
                columns.kind == "resolved",
            )
        )
    )
    data: dict[str, Any] | None = row.scalar_one_or_none()
    return data


_SAVE_STATES = Upsert(
    RECORD_STATE,
    ("entity", "record_key"),
    (
        "revision",
        "data",
        "content_hash",
        "deleted",
        "stores",
        "owner_store",
        "field_origins",
        "erp_base",
        "origin",
        "updated_at",
    ),
)
_SAVE_STORE = Upsert(KNOWN_STORE, ("store_id",), ("api_url", "last_seen"))


async def _write(connection: AsyncConnection, batch: _Batch) -> None:
    rows: list[dict[str, Any]] = []
    if batch.touched:
        rows = [
            {
                "entity": entity,
                "record_key": record_key,
                "revision": state.revision,
                "data": state.data,
                "content_hash": content_hash(state.data) if state.data is not None else None,
                "deleted": state.deleted,
                "stores": state.stores,
                "owner_store": state.owner_store,
                "field_origins": state.field_origins,
                "erp_base": state.erp_base,
                "origin": origin,
                "updated_at": batch.now,
            }
            for (entity, record_key), (state, origin) in batch.touched.items()
        ]
    await write_together(
        connection, [(_SAVE_STATES, rows), (EVENT_LOG, batch.log_rows)], batch.outgoing
    )
