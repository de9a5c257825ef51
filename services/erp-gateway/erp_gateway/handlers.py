"""The gateway's use cases: record a push from the ERP, and take in events for the ERP."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from erp_gateway.domain import (
    AcceptedChange,
    Decision,
    PushedChange,
    RejectedChange,
    decide_change,
)
from erp_gateway.repository import (
    ChangeRow,
    event_ids_of_changes,
    insert_changes,
    insert_deliveries,
    insert_rejections,
)
from erp_gateway.tables import DeliveryStatus
from lojasync.envelope import (
    ERP_ORIGIN,
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    Envelope,
    changed_key,
    serialize_event,
)
from lojasync.ids import new_id
from lojasync.messaging import PermanentFailure
from lojasync.partitioning import partition_key
from lojasync.persistence import OutgoingEvent, add_outbox, record_inbox, utc_now
from lojasync.policy import Policy
from lojasync.reference import ReferenceTables
from lojasync.service import ServiceRuntime

logger = logging.getLogger(__name__)

ResultStatus = Literal["accepted", "rejected", "duplicate"]


@dataclass(frozen=True)
class PreparedItem:
    """A pushed item after the domain decided it; `event` is set for accepted items."""

    decision: Decision
    event: OutgoingEvent | None = None


@dataclass(frozen=True)
class ItemResult:
    index: int
    status: ResultStatus
    entity: str
    record_key: str | None
    event_id: str | None = None
    errors: list[dict[str, object]] | None = None


@dataclass
class PushOutcome:
    results: list[ItemResult] = field(default_factory=list)

    def count(self, status: ResultStatus) -> int:
        return sum(1 for result in self.results if result.status == status)


def prepare_push(
    items: Sequence[PushedChange], policy: Policy, tables: ReferenceTables
) -> list[PreparedItem]:
    """Decide every item and serialize the events of the accepted ones.

    CPU-bound and free of I/O, so the API runs it in a worker thread.
    """
    prepared: list[PreparedItem] = []
    for item in items:
        decision = decide_change(item, policy, tables)
        event = _outgoing(decision, policy) if isinstance(decision, AcceptedChange) else None
        prepared.append(PreparedItem(decision, event))
    return prepared


def _outgoing(change: AcceptedChange, policy: Policy) -> OutgoingEvent:
    # Serialized without building the Envelope model: a push carries up to thousands.
    event_id = new_id()
    return OutgoingEvent(
        event_id,
        changed_key(change.entity, ERP_ORIGIN),
        RECORD_CHANGED,
        serialize_event(id=event_id, **change.event_attributes()),
        partition_key(change.entity, change.record_key, policy),
    )


async def record_push(connection: AsyncConnection, prepared: Sequence[PreparedItem]) -> PushOutcome:
    """Write the events of one push to the outbox, skipping change ids already seen.

    Runs inside the caller's transaction, so every accepted item of the push is
    committed together or not at all. Within one push, the first accepted item with a
    change id wins and later items with the same id are duplicates.
    """
    first_event_of: dict[str, str] = {}
    in_push_duplicates: set[int] = set()
    change_rows: list[ChangeRow] = []
    for index, item in enumerate(prepared):
        decision, event = item.decision, item.event
        if not isinstance(decision, AcceptedChange) or event is None or decision.change_id is None:
            continue
        if decision.change_id in first_event_of:
            in_push_duplicates.add(index)
            continue
        first_event_of[decision.change_id] = event.event_id
        change_rows.append(
            ChangeRow(decision.change_id, event.event_id, decision.entity, decision.record_key)
        )

    new_change_ids = await insert_changes(connection, change_rows)
    seen_before = [row.change_id for row in change_rows if row.change_id not in new_change_ids]
    first_event_of.update(await event_ids_of_changes(connection, seen_before))

    outcome = PushOutcome()
    outgoing: list[OutgoingEvent] = []
    for index, item in enumerate(prepared):
        decision, event = item.decision, item.event
        if isinstance(decision, RejectedChange) or event is None:
            outcome.results.append(_rejected_result(index, decision))
            continue
        change_id = decision.change_id
        if change_id is not None and (
            index in in_push_duplicates or change_id not in new_change_ids
        ):
            first_event = first_event_of.get(change_id)
            outcome.results.append(
                ItemResult(index, "duplicate", decision.entity, decision.record_key, first_event)
            )
            continue
        outgoing.append(event)
        outcome.results.append(
            ItemResult(index, "accepted", decision.entity, decision.record_key, event.event_id)
        )

    await add_outbox(connection, outgoing)
    return outcome


def _rejected_result(index: int, decision: Decision) -> ItemResult:
    errors = decision.errors if isinstance(decision, RejectedChange) else []
    return ItemResult(
        index, "rejected", decision.entity, decision.record_key, event_id=None, errors=errors
    )


class ErpEventHandler:
    """Takes `resolved` events of store changes and `rejected` events for the ERP.

    Each batch is one transaction: the inbox skips events seen before, resolved store
    changes become pending deliveries, and rejections become rows the ERP can read.
    `on_deliveries` runs after a commit that added deliveries, to wake the worker.
    """

    def __init__(self, runtime: ServiceRuntime, on_deliveries: Callable[[], None]) -> None:
        self._runtime = runtime
        self._on_deliveries = on_deliveries

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        rows = [_row_of(envelope) for envelope in envelopes]

        async with self._runtime.transaction() as connection:
            new_ids = await record_inbox(connection, [envelope.id for envelope in envelopes])
            deliveries: list[dict[str, Any]] = []
            rejections: list[dict[str, Any]] = []
            for envelope, row in zip(envelopes, rows, strict=True):
                if envelope.id not in new_ids:
                    continue
                new_ids.discard(envelope.id)  # the same id twice in one batch counts once
                if row is None:
                    logger.debug(
                        "resolved ERP change ignored; the ERP made it",
                        extra={"event_id": envelope.id, "record_key": envelope.recordkey},
                    )
                elif envelope.type == RECORD_RESOLVED:
                    deliveries.append(row)
                else:
                    rejections.append(row)
            await insert_deliveries(connection, deliveries)
            await insert_rejections(connection, rejections)

        for delivery in deliveries:
            logger.debug(
                "delivery queued",
                extra={
                    "event_id": delivery["event_id"],
                    "entity": delivery["entity"],
                    "record_key": delivery["record_key"],
                    "revision": delivery["revision"],
                },
            )
        for rejection in rejections:
            logger.info(
                "rejection of an ERP change stored",
                extra={
                    "event_id": rejection["event_id"],
                    "causation_id": rejection["causation_id"],
                    "entity": rejection["entity"],
                    "record_key": rejection["record_key"],
                    "code": rejection["code"],
                },
            )
        skipped = len(envelopes) - len(deliveries) - len(rejections)
        if skipped:
            logger.debug("events skipped", extra={"events": skipped})
        if deliveries:
            self._on_deliveries()


def _row_of(envelope: Envelope) -> dict[str, Any] | None:
    """Turn an event into its table row; None for a resolved change the ERP made itself.

    Raises PermanentFailure for an event that is not for this queue or lacks attributes.
    """
    if envelope.type == RECORD_RESOLVED:
        return _delivery_row(envelope)
    if envelope.type == RECORD_REJECTED:
        return _rejection_row(envelope)
    raise PermanentFailure(
        envelope.id, f"unexpected event type {envelope.type!r} on the erp-gateway queue"
    )


def _delivery_row(envelope: Envelope) -> dict[str, Any] | None:
    # Everything routed to the ERP is delivered: store changes, and ERP changes whose
    # merge with store edits left the record different from what the ERP sent.
    origin = envelope.origin or ""
    entity, record_key = _require_record(envelope)
    if envelope.revision is None:
        raise PermanentFailure(envelope.id, "record.resolved without the revision attribute")
    data = envelope.data
    deleted = data.get("deleted", False)
    record = data.get("record")
    if not isinstance(deleted, bool) or not (record is None or isinstance(record, dict)):
        raise PermanentFailure(
            envelope.id, "record.resolved needs data.deleted (bool) and data.record (object)"
        )
    payload = {
        "event_id": envelope.id,
        "entity": entity,
        "record_key": record_key,
        "revision": envelope.revision,
        "deleted": deleted,
        "record": record,
        "origin": origin,
        "time": envelope.time.isoformat(),
    }
    now = utc_now()
    return {
        "event_id": envelope.id,
        "entity": entity,
        "record_key": record_key,
        "revision": envelope.revision,
        "origin": origin,
        "payload": payload,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "delivered_at": None,
        "created_at": now,
    }


def _rejection_row(envelope: Envelope) -> dict[str, Any]:
    entity, record_key = _require_record(envelope)
    data = envelope.data
    code = data.get("code")
    message = data.get("message")
    message_pt_br = data.get("message_pt_br")
    if (
        not isinstance(code, str)
        or not isinstance(message, str)
        or not isinstance(message_pt_br, str)
    ):
        raise PermanentFailure(
            envelope.id, "record.rejected needs data.code, data.message and data.message_pt_br"
        )
    errors = data.get("errors") or []
    current = data.get("current")
    field_name = data.get("field")
    return {
        "event_id": envelope.id,
        "causation_id": envelope.causationid,
        "correlation_id": envelope.correlationid,
        "entity": entity,
        "record_key": record_key,
        "revision": envelope.revision,
        "code": code,
        "message": message,
        "message_pt_br": message_pt_br,
        "field": field_name if isinstance(field_name, str) else None,
        "errors": errors if isinstance(errors, list) else [],
        "current": current if isinstance(current, dict) else None,
        "deleted": bool(data.get("deleted", False)),
        "received_at": utc_now(),
    }


def _require_record(envelope: Envelope) -> tuple[str, str]:
    if not envelope.entity or not envelope.recordkey:
        raise PermanentFailure(
            envelope.id, f"{envelope.type} without the entity or recordkey attribute"
        )
    return envelope.entity, envelope.recordkey
