"""A reference model of the ownership policy, independent of the services' code.

Tests feed it the changes they make to the running services, in the order the
orchestrator decides them, and compare the state it computes with what the
orchestrator, every store and the ERP hold afterwards. It models customers, operators
and the ERP-owned entities (products, prices, price tables and the reference tables):

- ERP-owned records take the ERP's record as sent, and every store change is rejected.
- A customer merges by field. A store edit carries the fields it changed and the record
  it started from (its base). A field of the edit is dropped when its value changed
  since the base and the current value came from the ERP, so on one field the ERP wins
  over a store. Otherwise the field applies, so between stores the newest edit wins.
  An ERP push carries the full record and applies the fields that differ from the ERP's
  previous push of that record, so store edits of the other fields survive it. The first
  push of a record applies every field. A store cannot change the CPF/CNPJ (`document`)
  once the record was accepted; the ERP can.
- An operator belongs to the store that created it. Only that store and the ERP may
  change it, the ERP may not create one, and no other store receives it.
- The ERP may delete any record it may change. Deletes by stores are not modelled.

Records are compared as the catalog normalizes them, so tests send normalized values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Record = dict[str, Any]

ERP = "erp"
CUSTOMER = "customer"
OPERATOR = "operator"
# Customer fields a store cannot change once the record was accepted.
IMMUTABLE_CUSTOMER_FIELDS = frozenset({"document"})
# The field of an operator that names the store it belongs to.
OWNER_STORE_FIELD = "store_id"


class Ownership(StrEnum):
    ERP = "erp"  # changed in the ERP only, and every store change is rejected
    SHARED = "shared"  # ERP and stores change it, merged by field (customer)
    STORE = "store"  # created by a store and changed by it or the ERP (operator)


OWNERSHIP: Mapping[str, Ownership] = {
    CUSTOMER: Ownership.SHARED,
    OPERATOR: Ownership.STORE,
}
"""Entities not listed here are ERP-owned."""


def ownership(entity: str) -> Ownership:
    return OWNERSHIP.get(entity, Ownership.ERP)


def store_origin(store_id: str) -> str:
    return f"store:{store_id}"


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the orchestrator records a new revision
    UNCHANGED = "unchanged"  # an ERP push that changes nothing, so no new revision
    REJECTED = "rejected"  # the orchestrator rejects the change, and nothing changes


@dataclass(frozen=True)
class ErpUpsert:
    """The ERP pushes the full record."""

    entity: str
    key: str
    record: Record


@dataclass(frozen=True)
class ErpDelete:
    entity: str
    key: str


@dataclass(frozen=True)
class StoreCreate:
    """A store registers a new record under a key it generated."""

    store_id: str
    entity: str
    key: str
    record: Record


@dataclass(frozen=True)
class StoreEdit:
    """A store changes some fields of a record it holds.

    `base` is the record as the store held it when the edit was made: the record at the
    revision the edit names as its base.
    """

    store_id: str
    entity: str
    key: str
    fields: Record
    base: Record


Operation = ErpUpsert | ErpDelete | StoreCreate | StoreEdit


@dataclass
class ModelRecord:
    """What the orchestrator must hold for one key."""

    data: Record | None = None
    """The current record, or None when it never existed or was deleted."""
    field_origins: dict[str, str] = field(default_factory=dict)
    """Who set each field's current value: "erp" or "store:<id>"."""
    erp_pushed: Record | None = None
    """The record the ERP sent in its last accepted push: the base of its next push."""
    owner_store: str | None = None

    @property
    def exists(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    """Why the model decided so, for failure messages."""


class PolicyModel:
    """The orchestrator's state after a sequence of operations, under the policy."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], ModelRecord] = {}

    def record(self, entity: str, key: str) -> Record | None:
        """Return the record the orchestrator must hold, or None when it must hold none."""
        found = self._records.get((entity, key))
        return None if found is None or found.data is None else dict(found.data)

    def holders(self, entity: str, key: str, stores: tuple[str, ...]) -> tuple[str, ...]:
        """Return the stores that must hold the record: its owner for an operator, else all."""
        found = self._records.get((entity, key))
        if ownership(entity) is Ownership.STORE:
            owner = found.owner_store if found is not None else None
            return tuple(store_id for store_id in stores if store_id == owner)
        return stores

    def apply(self, operation: Operation) -> Verdict:
        """Decide one operation and update the state unless it is rejected."""
        current = self._records.setdefault((operation.entity, operation.key), ModelRecord())
        if isinstance(operation, ErpUpsert):
            verdict = _erp_upsert(current, operation)
        elif isinstance(operation, ErpDelete):
            verdict = _erp_delete(current, operation)
        elif isinstance(operation, StoreCreate):
            verdict = _store_create(current, operation)
        else:
            verdict = _store_edit(current, operation)
        return verdict


def _accepted(reason: str) -> Verdict:
    return Verdict(Outcome.ACCEPTED, reason)


def _rejected(reason: str) -> Verdict:
    return Verdict(Outcome.REJECTED, reason)


def _erp_upsert(current: ModelRecord, operation: ErpUpsert) -> Verdict:
    pushed = dict(operation.record)
    kind = ownership(operation.entity)

    if not current.exists:
        if kind is Ownership.STORE:
            return _rejected("the ERP may not create a store-owned record")
        current.data = pushed
        current.field_origins = dict.fromkeys(pushed, ERP)
        current.erp_pushed = pushed
        return _accepted("the ERP creates the record")

    assert current.data is not None
    if kind is Ownership.ERP:
        unchanged = pushed == current.data
        current.data = pushed
        current.erp_pushed = pushed
        if unchanged:
            return Verdict(Outcome.UNCHANGED, "the ERP push equals the current record")
        return _accepted("the ERP replaces its own record")

    if kind is Ownership.SHARED:
        base = current.erp_pushed if current.erp_pushed is not None else current.data
        patch = {name: value for name, value in pushed.items() if base.get(name) != value}
    else:
        patch = pushed

    updated = {**current.data, **patch}
    current.erp_pushed = pushed
    if updated == current.data:
        return Verdict(Outcome.UNCHANGED, "the ERP push equals the current record")
    _set_fields(current, patch, ERP)
    return _accepted(f"the ERP changes {sorted(patch)}")


def _erp_delete(current: ModelRecord, operation: ErpDelete) -> Verdict:
    if not current.exists:
        return _rejected("there is no record to delete")
    current.data = None
    current.field_origins = {}
    return _accepted("the ERP deletes the record")


def _store_create(current: ModelRecord, operation: StoreCreate) -> Verdict:
    kind = ownership(operation.entity)
    if kind is Ownership.ERP:
        return _rejected("stores may not create ERP-owned records")
    if current.exists:
        return _rejected("a store creates records under new keys only")
    record = dict(operation.record)
    if kind is Ownership.STORE and record.get(OWNER_STORE_FIELD) != operation.store_id:
        return _rejected("a store creates only its own records")

    current.data = record
    current.field_origins = dict.fromkeys(record, store_origin(operation.store_id))
    current.erp_pushed = None
    current.owner_store = operation.store_id if kind is Ownership.STORE else None
    return _accepted("the store creates the record")


def _store_edit(current: ModelRecord, operation: StoreEdit) -> Verdict:
    kind = ownership(operation.entity)
    if kind is Ownership.ERP:
        return _rejected("stores may not change ERP-owned records")
    if not current.exists:
        return _rejected("the record no longer exists, and an edit is not a whole record")
    assert current.data is not None
    if kind is Ownership.STORE and current.owner_store != operation.store_id:
        return _rejected(f"only {current.owner_store} may change this record")

    changed = {
        name: value for name, value in operation.fields.items() if current.data.get(name) != value
    }
    if kind is Ownership.SHARED:
        frozen = sorted(set(changed) & IMMUTABLE_CUSTOMER_FIELDS)
        if frozen:
            return _rejected(f"a store cannot change {frozen[0]} of an accepted record")

    origin = store_origin(operation.store_id)
    applied: Record = {}
    for name, value in operation.fields.items():
        erp_changed_since_base = (
            kind is Ownership.SHARED
            and current.data.get(name) != operation.base.get(name)
            and current.field_origins.get(name) == ERP
        )
        if not erp_changed_since_base:
            applied[name] = value

    _set_fields(current, applied, origin)
    return _accepted(f"{origin} changes {sorted(applied)}")


def _set_fields(current: ModelRecord, fields: Record, origin: str) -> None:
    """Write `fields` into the record; a field whose value changes takes `origin`."""
    assert current.data is not None
    for name, value in fields.items():
        if current.data.get(name) != value or name not in current.field_origins:
            current.field_origins[name] = origin
    current.data = {**current.data, **fields}
