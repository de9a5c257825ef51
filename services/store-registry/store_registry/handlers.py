"""The store registry's use cases: local edits, reads, and the orchestrator's decisions.

Every write opens one transaction, locks and loads the records, and lets `domain`
decide. It then saves the rows and adds the outgoing events to the outbox in the same
transaction, so the outbox relay publishes them only after the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from lojasync.catalog import ENTITIES, RecordInvalid, entity_spec, validate_record
from lojasync.envelope import (
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    STORE_ANNOUNCED,
    Envelope,
    changed_key,
    store_origin,
    store_target,
)
from lojasync.ids import new_id
from lojasync.messaging import PermanentFailure
from lojasync.partitioning import outgoing_event
from lojasync.persistence import OutgoingEvent, add_outbox, database_ready, record_inbox, utc_now
from lojasync.policy import Policy
from lojasync.reference import ReferenceTables
from lojasync.service import ServiceRuntime, Subscription
from lojasync.topology import store_queue
from store_registry.domain import (
    ChangeToPublish,
    EditKind,
    EditOutcome,
    LocalEdit,
    Record,
    RecordNotFound,
    Rejection,
    Resolution,
    StoredRecord,
    apply_rejected,
    apply_resolved,
    assign_server_key,
    canonical_key,
    delete_locally,
    merge_local_edit,
)
from store_registry.repository import (
    EntitySummary,
    RecordId,
    entity_summaries,
    list_records,
    load_record,
    load_records,
    lock_records,
    save_records,
)

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "lojasync/store-registry"


@dataclass(frozen=True)
class RecordPage:
    records: list[StoredRecord]
    next_after: str | None


class StoreRegistry:
    """One store's registry: its records in PostgreSQL, its events through the outbox."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        store_id: str,
        api_url: str,
        policy: Policy,
        tables: ReferenceTables,
    ) -> None:
        self.runtime = runtime
        self.store_id = store_id
        self.api_url = api_url
        self.policy = policy
        self.tables = tables
        self.origin = store_origin(store_id)
        self.source = f"{SOURCE_PREFIX}/{store_id}"

    # --- Wiring ---------------------------------------------------------------------------

    def subscription(self) -> Subscription:
        spec = store_queue(self.store_id)
        return Subscription(spec.consumer, spec.bindings, self.handle_decisions)

    async def ready(self) -> dict[str, bool]:
        """Report whether the database accepts queries and the broker connection is open."""
        return {
            "database": await database_ready(self.runtime.engine),
            "broker": self.runtime.broker_ready,
        }

    async def announce(self) -> None:
        """Queue the `store.announced` event with this store's id and API URL."""
        event = Envelope(
            source=self.source,
            type=STORE_ANNOUNCED,
            subject=f"store/{self.store_id}",
            origin=self.origin,
            data={"store_id": self.store_id, "api_url": self.api_url},
        )
        routing_key = f"announced.{store_target(self.store_id)}"
        async with self.runtime.transaction() as connection:
            await add_outbox(
                connection,
                [outgoing_event(event, routing_key, self.policy)],
            )
        logger.info(
            "store announcement queued",
            extra={"store_id": self.store_id, "api_url": self.api_url, "event_id": event.id},
        )

    # --- Local edits ----------------------------------------------------------------------

    async def upsert(self, edit: LocalEdit) -> EditOutcome:
        """Create or change a record here; shared changes wait for the orchestrator."""
        entity_spec(edit.entity)
        edit = replace(edit, record_key=canonical_key(edit.entity, edit.record_key))
        record_id = (edit.entity, edit.record_key)
        now = utc_now()

        async with self.runtime.transaction() as connection:
            await lock_records(connection, [record_id])
            current = await load_record(connection, *record_id)
            outcome = merge_local_edit(
                self.policy,
                self._validate,
                store_id=self.store_id,
                edit=edit,
                current=current,
                event_id=new_id(),
                now=now,
            )
            await self._save_outcome(connection, outcome)
        return outcome

    async def create(self, entity: str, fields: Mapping[str, object]) -> EditOutcome:
        """Create a record under a UUID generated here (customer, operator)."""
        entity_spec(entity)
        return await self.upsert(assign_server_key(entity, fields, str(uuid.uuid4())))

    async def delete(self, entity: str, key: str, base_revision: int | None) -> EditOutcome:
        entity_spec(entity)
        key = _lookup_key(entity, key)
        now = utc_now()

        async with self.runtime.transaction() as connection:
            await lock_records(connection, [(entity, key)])
            current = await load_record(connection, entity, key)
            outcome = delete_locally(
                self.policy,
                store_id=self.store_id,
                entity=entity,
                key=key,
                base_revision=base_revision,
                current=current,
                event_id=new_id(),
                now=now,
            )
            await self._save_outcome(connection, outcome)
        return outcome

    def _validate(self, entity: str, data: Mapping[str, object]) -> Record:
        return validate_record(entity, data, self.tables)

    async def _save_outcome(self, connection: AsyncConnection, outcome: EditOutcome) -> None:
        if outcome.kind is EditKind.UNCHANGED:
            return
        await save_records(connection, [outcome.record], utc_now())
        if outcome.change is None:
            return
        await add_outbox(connection, [self._changed_event(outcome.change)])
        logger.info(
            "local edit queued for the orchestrator",
            extra={
                "event_id": outcome.change.event_id,
                "entity": outcome.change.entity,
                "record_key": outcome.change.record_key,
                "action": outcome.change.action,
                "base_revision": outcome.change.base_revision,
            },
        )

    def _changed_event(self, change: ChangeToPublish) -> OutgoingEvent:
        event = Envelope(
            id=change.event_id,
            source=self.source,
            type=RECORD_CHANGED,
            subject=f"{change.entity}/{change.record_key}",
            entity=change.entity,
            recordkey=change.record_key,
            origin=self.origin,
            baserevision=change.base_revision,
            data=change.event_data(),
        )
        return outgoing_event(event, changed_key(change.entity, self.origin), self.policy)

    # --- Reads ----------------------------------------------------------------------------

    async def get(self, entity: str, key: str) -> StoredRecord:
        """Return the record, tombstones included. Raise RecordNotFound when no row exists."""
        entity_spec(entity)
        key = _lookup_key(entity, key)
        async with self.runtime.engine.connect() as connection:
            record = await load_record(connection, entity, key)
        if record is None:
            raise RecordNotFound(entity, key)
        return record

    async def list_page(
        self, entity: str, *, after: str | None, limit: int, include_deleted: bool
    ) -> RecordPage:
        entity_spec(entity)
        async with self.runtime.engine.connect() as connection:
            records = await list_records(
                connection, entity, after=after, limit=limit + 1, include_deleted=include_deleted
            )
        if len(records) > limit:
            return RecordPage(records[:limit], records[limit - 1].record_key)
        return RecordPage(records, None)

    async def status(self) -> dict[str, EntitySummary]:
        async with self.runtime.engine.connect() as connection:
            return await entity_summaries(connection, ENTITIES)

    # --- Decisions of the orchestrator ----------------------------------------------------

    async def handle_decisions(self, envelopes: Sequence[Envelope]) -> None:
        """Apply a batch of `record.resolved` and `record.rejected` events in order.

        The rows of the batch are loaded with one query and written with one statement;
        events already in the inbox are skipped.
        """
        decisions = [_parse_decision(envelope) for envelope in envelopes]
        now = utc_now()

        async with self.runtime.transaction() as connection:
            new_ids = await record_inbox(connection, [envelope.id for envelope in envelopes])
            fresh = _first_deliveries(decisions, new_ids)
            record_ids = {(d.entity, d.record_key) for d in fresh}
            await lock_records(connection, record_ids)
            stored = await load_records(connection, record_ids)

            updated: dict[RecordId, StoredRecord] = {}
            for decision in fresh:
                record_id = (decision.entity, decision.record_key)
                current = updated.get(record_id, stored.get(record_id))
                if isinstance(decision, Resolution):
                    result = apply_resolved(current, decision)
                else:
                    result = apply_rejected(current, decision, now)
                    if result is not None:
                        _log_rejection(decision)
                if result is not None:
                    updated[record_id] = result
            await save_records(connection, list(updated.values()), now)

        ignored = sum(1 for decision in decisions if decision is None)
        if ignored:
            logger.warning(
                "events of an unexpected type ignored",
                extra={"store_id": self.store_id, "events": ignored},
            )
        logger.debug(
            "decisions applied",
            extra={
                "events": len(envelopes),
                "duplicates": len(envelopes) - len(new_ids),
                "records_changed": len(updated),
            },
        )


def _log_rejection(rejection: Rejection) -> None:
    logger.info(
        "local edit rejected by the orchestrator",
        extra={
            "event_id": rejection.event_id,
            "causation_id": rejection.causation_id,
            "entity": rejection.entity,
            "record_key": rejection.record_key,
            "code": rejection.code,
        },
    )


def _lookup_key(entity: str, key: str) -> str:
    """Return the canonical form of a request key, or the key as given when it is malformed
    (no record has a malformed key, so the lookup then finds nothing)."""
    try:
        return canonical_key(entity, key)
    except RecordInvalid:
        return key


def _first_deliveries(
    decisions: Sequence[Resolution | Rejection | None], new_ids: set[str]
) -> list[Resolution | Rejection]:
    """Keep the decisions the inbox saw for the first time, once each, in batch order."""
    first_deliveries: list[Resolution | Rejection] = []
    seen: set[str] = set()
    for decision in decisions:
        if decision is None or decision.event_id not in new_ids or decision.event_id in seen:
            continue
        seen.add(decision.event_id)
        first_deliveries.append(decision)
    return first_deliveries


def _parse_decision(envelope: Envelope) -> Resolution | Rejection | None:
    """Parse a resolved or rejected event, or return None for an event of another type.

    Raises PermanentFailure when the event lacks what the contract requires, since no
    retry can add it.
    """
    if envelope.type == RECORD_RESOLVED:
        return _parse_resolved(envelope)
    if envelope.type == RECORD_REJECTED:
        return _parse_rejected(envelope)
    return None


def _record_id(envelope: Envelope) -> tuple[str, str]:
    if not envelope.entity or not envelope.recordkey:
        raise PermanentFailure(envelope.id, f"{envelope.type} needs entity and recordkey")
    return envelope.entity, envelope.recordkey


def _parse_resolved(envelope: Envelope) -> Resolution:
    entity, key = _record_id(envelope)
    if envelope.revision is None:
        raise PermanentFailure(envelope.id, "record.resolved needs revision")
    data = envelope.data
    deleted = _optional_bool(envelope, data, "deleted")
    out_of_scope = _optional_bool(envelope, data, "out_of_scope")
    record = data.get("record")
    if record is not None and not isinstance(record, dict):
        raise PermanentFailure(envelope.id, "record.resolved data.record must be an object")
    if record is None and not (deleted or out_of_scope):
        raise PermanentFailure(envelope.id, "record.resolved without data.record must delete")
    return Resolution(
        event_id=envelope.id,
        entity=entity,
        record_key=key,
        revision=envelope.revision,
        causation_id=envelope.causationid,
        record=record,
        deleted=deleted,
        out_of_scope=out_of_scope,
    )


def _parse_rejected(envelope: Envelope) -> Rejection:
    entity, key = _record_id(envelope)
    if not envelope.causationid:
        raise PermanentFailure(envelope.id, "record.rejected needs causationid")
    data = envelope.data
    code = data.get("code")
    if not isinstance(code, str):
        raise PermanentFailure(envelope.id, "record.rejected needs data.code")
    current = data.get("current")
    if current is not None and not isinstance(current, dict):
        raise PermanentFailure(envelope.id, "record.rejected data.current must be an object")
    errors = data.get("errors") or []
    if not isinstance(errors, list):
        raise PermanentFailure(envelope.id, "record.rejected data.errors must be a list")
    return Rejection(
        event_id=envelope.id,
        entity=entity,
        record_key=key,
        causation_id=envelope.causationid,
        revision=envelope.revision,
        code=code,
        message=str(data.get("message") or ""),
        message_pt_br=str(data.get("message_pt_br") or ""),
        field=data.get("field") if isinstance(data.get("field"), str) else None,
        errors=errors,
        current=current,
        deleted=_optional_bool(envelope, data, "deleted"),
        out_of_scope=_optional_bool(envelope, data, "out_of_scope"),
    )


def _optional_bool(envelope: Envelope, data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise PermanentFailure(envelope.id, f"{envelope.type} data.{name} must be a boolean")
    return value
