"""Onboarding: bring a store that already has its own data into lojasync.

1. The orchestrator reads the store's legacy records (`GET /v1/onboarding/records`) and
   matches them to the ERP's records in the store's scope (`matching`).
2. The report lists per entity the records only in the ERP, only in the store, equal,
   different (field by field), in conflict (one GTIN on two products) and invalid. Each
   report item is kept in `onboarding_item`, with the decision the policy takes, if any.
3. Unless it is a dry run, the policy's decisions are applied at once: the ERP's state
   in scope goes to the store as batches (as a bootstrap does), and a store version the
   policy keeps is raised by the store as a change. The other items wait for a person,
   whose decision (accept ERP, accept store, merge chosen fields) is recorded with who
   took it and then applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import JSON, Boolean, Column, Integer, Table, Text, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from lojasync.catalog import ENTITIES, record_key, validate_record
from lojasync.errors import LojasyncError
from lojasync.persistence import UtcDateTime, json_document, utc_now
from lojasync.policy import Policy
from lojasync.reference import ReferenceTables
from sync_orchestrator.bootstrap import Bootstrapper
from sync_orchestrator.matching import Category, Decision, MatchItem, match_entity

logger = logging.getLogger(__name__)

LEGACY_PAGE = 5000
# Keys of records only in the ERP listed per entity in the report; the counts are complete.
REPORT_KEYS = 1000
RAISE_CHUNK = 1000

_IN_SCOPE = text(
    "SELECT entity, record_key, revision, data FROM record_state"
    " WHERE NOT deleted AND (stores IS NULL OR CAST(:store_id AS TEXT) = ANY(stores))"
    " AND entity = :entity"
)


class OnboardingItem(SQLModel, table=True):
    """One legacy record in an onboarding report, and the decision taken on it."""

    __tablename__ = "onboarding_item"

    operation_id: str = Field(primary_key=True)
    item: int = Field(sa_column=Column(Integer, primary_key=True))
    entity: str
    category: str
    store_key: str
    erp_key: str | None = None
    candidates: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    differences: dict[str, Any] = Field(default_factory=dict, sa_column=Column(json_document()))
    store_record: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    errors: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    allowed: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    auto: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    decision: str | None = Field(default=None, sa_column=Column(Text))
    decision_fields: dict[str, str] | None = Field(default=None, sa_column=Column(json_document()))
    decided_by: str | None = Field(default=None, sa_column=Column(Text))
    decided_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    applied_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


ONBOARDING_ITEM: Table = OnboardingItem.__table__  # type: ignore[attr-defined]
ONBOARDING_TABLES = (ONBOARDING_ITEM,)


class DecisionInvalid(LojasyncError):
    """A person's decision names an unknown item, a decision the item does not allow,
    or merge fields that are not among the item's differences."""

    def __init__(self, message: str, message_pt_br: str, *, item: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.message_pt_br = message_pt_br
        self.item = item

    def as_dict(self) -> dict[str, object]:
        return {
            "code": "decision_invalid",
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "item": self.item,
        }


def item_view(row: Any) -> dict[str, Any]:
    return {
        "item": row.item,
        "entity": row.entity,
        "category": row.category,
        "store_key": row.store_key,
        "erp_key": row.erp_key,
        "candidates": row.candidates,
        "differences": row.differences,
        "store_record": row.store_record,
        "errors": row.errors,
        "allowed": row.allowed,
        "auto": row.auto,
        "decision": row.decision,
        "decision_fields": row.decision_fields,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "applied_at": row.applied_at.isoformat() if row.applied_at else None,
    }


class Onboarder:
    def __init__(
        self,
        engine: AsyncEngine,
        client: httpx.AsyncClient,
        bootstrapper: Bootstrapper,
        policy: Policy,
        tables: ReferenceTables,
    ) -> None:
        self.engine = engine
        self.client = client
        self.bootstrapper = bootstrapper
        self.policy = policy
        self.tables = tables

    # --- Report ---------------------------------------------------------------------------

    async def run(
        self, operation_id: str, store_id: str, api_url: str, *, dry_run: bool
    ) -> dict[str, Any]:
        """Build and store the report; unless `dry_run`, apply the policy's decisions."""
        legacy = await self._legacy_records(api_url)
        summary: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        for entity in ENTITIES:
            erp_records = await self._erp_records(store_id, entity)
            records = legacy.get(entity, [])
            if not erp_records and not records:
                continue
            match = match_entity(entity, erp_records, records, self.policy, self._validate)
            counts = {category.value: 0 for category in Category}
            for item in match.items:
                counts[item.category.value] += 1
                rows.append(_item_row(operation_id, len(rows) + 1, item))
            summary[entity] = {
                **counts,
                "only_erp": len(match.only_erp),
                "only_erp_keys": match.only_erp[:REPORT_KEYS],
            }
        if rows:
            async with self.engine.begin() as connection:
                await connection.execute(ONBOARDING_ITEM.insert(), rows)

        result: dict[str, Any] = {"dry_run": dry_run, "entities": summary, "items": len(rows)}
        if dry_run:
            result["awaiting"] = 0
            return result

        sent = await self.bootstrapper.run(operation_id, store_id, None)
        await self.apply_decided(operation_id, store_id, api_url, decided_by="policy")
        result["sent"] = sent["records"]
        result["awaiting"] = await self.awaiting(operation_id)
        return result

    def _validate(self, entity: str, data: Any) -> dict[str, Any]:
        return validate_record(entity, data, self.tables)

    async def _legacy_records(self, api_url: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        params: dict[str, Any] = {"limit": LEGACY_PAGE}
        url = f"{api_url.rstrip('/')}/v1/onboarding/records"
        while True:
            response = await self.client.get(url, params=params)
            response.raise_for_status()
            body = response.json()
            for item in body["items"]:
                found.setdefault(item["entity"], []).append((item["key"], item["fields"]))
            if body["next"] is None:
                return found
            params = {"limit": LEGACY_PAGE, **body["next"]}

    async def _erp_records(self, store_id: str, entity: str) -> dict[str, dict[str, Any]]:
        # NOTE: matching holds every in-scope record of the entity in memory; it was run on
        # catalogs of tens of records in tests and not measured on large ones.
        async with self.engine.connect() as connection:
            rows = await connection.execute(_IN_SCOPE, {"store_id": store_id, "entity": entity})
            return {row.record_key: row.data for row in rows}

    async def items(self, operation_id: str, *, awaiting_only: bool) -> list[dict[str, Any]]:
        query = (
            select(ONBOARDING_ITEM)
            .where(ONBOARDING_ITEM.c.operation_id == operation_id)
            .order_by(ONBOARDING_ITEM.c.item)
        )
        if awaiting_only:
            query = query.where(ONBOARDING_ITEM.c.decision.is_(None))
        async with self.engine.connect() as connection:
            return [item_view(row) for row in await connection.execute(query)]

    async def awaiting(self, operation_id: str) -> int:
        return len(await self.items(operation_id, awaiting_only=True))

    # --- Decisions ------------------------------------------------------------------------

    async def record_decisions(
        self, operation_id: str, decisions: Sequence[dict[str, Any]], decided_by: str
    ) -> None:
        """Check and store a person's decisions; raises DecisionInvalid naming the item."""
        items = {item["item"]: item for item in await self.items(operation_id, awaiting_only=False)}
        now = utc_now()
        updates = []
        for decision in decisions:
            number = int(decision["item"])
            item = items.get(number)
            if item is None:
                raise DecisionInvalid(
                    f"item {number} is not in onboarding {operation_id}",
                    f"o item {number} não está na integração {operation_id}",
                    item=number,
                )
            if item["decision"] is not None:
                raise DecisionInvalid(
                    f"item {number} was already decided ({item['decision']} by "
                    f"{item['decided_by']})",
                    f"o item {number} já foi decidido ({item['decision']} por "
                    f"{item['decided_by']})",
                    item=number,
                )
            choice = str(decision["decision"])
            if choice not in item["allowed"]:
                allowed = ", ".join(item["allowed"])
                raise DecisionInvalid(
                    f"item {number} ({item['entity']} {item['store_key']}, {item['category']}) "
                    f"allows {allowed}, not {choice}",
                    f"o item {number} ({item['entity']} {item['store_key']}, "
                    f"{item['category']}) aceita {allowed}, não {choice}",
                    item=number,
                )
            erp_key = decision.get("erp_key") or item["erp_key"]
            if erp_key is not None and item["candidates"] and erp_key not in item["candidates"]:
                raise DecisionInvalid(
                    f"item {number}: erp_key {erp_key} is not one of {item['candidates']}",
                    f"item {number}: erp_key {erp_key} não está entre {item['candidates']}",
                    item=number,
                )
            fields = decision.get("fields")
            if choice == Decision.MERGE.value:
                unknown = sorted(set(fields or {}) - set(item["differences"]))
                if not fields or unknown:
                    raise DecisionInvalid(
                        f"item {number}: merge needs fields chosen among "
                        f"{sorted(item['differences'])}, each 'erp' or 'store'",
                        f"item {number}: merge precisa de campos escolhidos entre "
                        f"{sorted(item['differences'])}, cada um 'erp' ou 'store'",
                        item=number,
                    )
            updates.append(
                {
                    "number": number,
                    "decision": choice,
                    "fields": fields,
                    "erp_key": erp_key,
                }
            )
        async with self.engine.begin() as connection:
            for change in updates:
                await connection.execute(
                    update(ONBOARDING_ITEM)
                    .where(
                        ONBOARDING_ITEM.c.operation_id == operation_id,
                        ONBOARDING_ITEM.c.item == change["number"],
                    )
                    .values(
                        decision=change["decision"],
                        decision_fields=change["fields"],
                        erp_key=change["erp_key"],
                        decided_by=decided_by,
                        decided_at=now,
                    )
                )
        logger.info(
            "onboarding decisions recorded",
            extra={"operation_id": operation_id, "decisions": len(updates), "by": decided_by},
        )

    async def apply_decided(
        self, operation_id: str, store_id: str, api_url: str, *, decided_by: str
    ) -> int:
        """Apply every decided item not applied yet; the ERP's state is already in the store.

        An item the policy decides is recorded as decided by `decided_by` first.
        """
        await self._record_policy_decisions(operation_id, decided_by)
        query = select(ONBOARDING_ITEM).where(
            ONBOARDING_ITEM.c.operation_id == operation_id,
            ONBOARDING_ITEM.c.decision.is_not(None),
            ONBOARDING_ITEM.c.applied_at.is_(None),
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        if not rows:
            return 0

        revisions = await self._revisions(rows)
        raises: list[dict[str, Any]] = []
        for row in rows:
            raised = self._raised_version(row, revisions)
            if raised is not None:
                raises.append(raised)
        base = api_url.rstrip("/")
        for start in range(0, len(raises), RAISE_CHUNK):
            response = await self.client.post(
                f"{base}/v1/drift/raise", json={"records": raises[start : start + RAISE_CHUNK]}
            )
            response.raise_for_status()
        settled = [{"entity": row.entity, "key": row.store_key} for row in rows]
        response = await self.client.post(
            f"{base}/v1/onboarding/settled", json={"records": settled}
        )
        response.raise_for_status()

        async with self.engine.begin() as connection:
            await connection.execute(
                update(ONBOARDING_ITEM)
                .where(
                    ONBOARDING_ITEM.c.operation_id == operation_id,
                    ONBOARDING_ITEM.c.item.in_([row.item for row in rows]),
                )
                .values(applied_at=utc_now())
            )
        logger.info(
            "onboarding decisions applied",
            extra={"operation_id": operation_id, "items": len(rows), "raised": len(raises)},
        )
        return len(rows)

    async def _record_policy_decisions(self, operation_id: str, decided_by: str) -> None:
        """Record who took the policy's decisions, which the report already holds."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(ONBOARDING_ITEM)
                .where(
                    ONBOARDING_ITEM.c.operation_id == operation_id,
                    ONBOARDING_ITEM.c.auto.is_(True),
                    ONBOARDING_ITEM.c.decided_by.is_(None),
                )
                .values(decided_by=decided_by, decided_at=utc_now())
            )

    async def _revisions(self, rows: Sequence[Any]) -> dict[tuple[str, str], tuple[int, Any]]:
        keys = {(row.entity, row.erp_key) for row in rows if row.erp_key is not None}
        found: dict[tuple[str, str], tuple[int, Any]] = {}
        async with self.engine.connect() as connection:
            for entity, key in keys:
                state = (
                    await connection.execute(
                        text(
                            "SELECT revision, data FROM record_state"
                            " WHERE entity = :entity AND record_key = :key AND NOT deleted"
                        ),
                        {"entity": entity, "key": key},
                    )
                ).first()
                if state is not None:
                    found[(entity, key)] = (state.revision, state.data)
        return found

    def _raised_version(
        self, row: Any, revisions: dict[tuple[str, str], tuple[int, Any]]
    ) -> dict[str, Any] | None:
        """Return the change the store raises for a decided item, or None when the ERP's
        version is kept (the store already received it with the ERP's state)."""
        if row.decision == Decision.ACCEPT_ERP.value or row.store_record is None:
            return None
        key_fields = ENTITIES[row.entity].key_fields
        if row.erp_key is None:
            return {
                "entity": row.entity,
                "record_key": record_key(row.entity, row.store_record),
                "base_revision": 0,
                "fields": row.store_record,
            }
        revision, erp_record = revisions.get((row.entity, row.erp_key), (0, None))
        fields = dict(row.store_record)
        if row.decision == Decision.MERGE.value and erp_record is not None:
            fields = dict(erp_record)
            for name, side in (row.decision_fields or {}).items():
                if side == "store":
                    fields[name] = row.store_record.get(name)
        if erp_record is not None:
            for name in key_fields:
                fields[name] = erp_record.get(name)
        return {
            "entity": row.entity,
            "record_key": row.erp_key,
            "base_revision": revision,
            "fields": fields,
        }


def _item_row(operation_id: str, number: int, item: MatchItem) -> dict[str, Any]:
    return {
        "operation_id": operation_id,
        "item": number,
        "entity": item.entity,
        "category": item.category.value,
        "store_key": item.store_key,
        "erp_key": item.erp_key,
        "candidates": item.candidates,
        "differences": item.differences,
        "store_record": item.store_record,
        "errors": item.errors,
        "allowed": [decision.value for decision in item.allowed],
        "auto": item.auto_decision is not None,
        "decision": item.auto_decision.value if item.auto_decision is not None else None,
        "decision_fields": None,
        "decided_by": None,
        "decided_at": None,
        "applied_at": None,
    }
