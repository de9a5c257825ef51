"""The orchestrator's decisions, as pure functions: no I/O, no clock, no broker.

`decide` takes one change and the record's current state and returns either the new
state (`Accepted`) or the reason it is refused (`Rejected`). The handler assigns the
revision, stores the result and routes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lojasync.catalog import RecordInvalid
from lojasync.envelope import ERP_ORIGIN, origin_store_id
from lojasync.policy import (
    Action,
    Conflict,
    EntityPolicy,
    Owner,
    PolicyViolation,
    ScopeFieldDistribution,
    ScopeFromDistribution,
    check_erp_change,
    check_store_change,
)

Record = dict[str, Any]
Validator = Callable[[str, Mapping[str, object]], Record]


class Change(NamedTuple):
    """One `record.changed` event, parsed. Named tuples are cheaper to build than frozen
    dataclasses, and the orchestrator builds one of these and one decision per change."""

    event_id: str
    entity: str
    record_key: str
    origin: str
    action: Action | None  # None for upsert: create or edit is decided against the state
    deleting: bool
    fields: Record
    base_revision: int | None
    correlation_id: str | None = None


@dataclass
class CurrentRecord:
    """The stored state of one record before a change."""

    revision: int
    data: Record | None
    deleted: bool
    stores: list[str] | None
    owner_store: str | None
    field_origins: dict[str, str] = field(default_factory=dict)
    erp_base: Record | None = None


class Accepted(NamedTuple):
    data: Record
    deleted: bool
    owner_store: str | None
    field_origins: dict[str, str]
    erp_base: Record | None
    # Fields of the change that lost to a newer ERP value (field-merge only).
    overridden: tuple[str, ...] = ()
    unchanged: bool = False


@dataclass(frozen=True)
class Rejected:
    code: str
    message: str
    message_pt_br: str
    field: str | None = None
    errors: tuple[dict[str, object], ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "field": self.field,
            "errors": list(self.errors),
        }


Decision = Accepted | Rejected


def decide(
    rules: EntityPolicy,
    change: Change,
    current: CurrentRecord | None,
    base_data: Record | None,
    validate: Validator,
) -> Decision:
    """Decide one change against the current state under the entity's rules.

    `base_data` is the record at `change.base_revision` when that revision is older than
    the current one (needed by field-merge), else None.
    """
    exists = current is not None and not current.deleted and current.data is not None
    store_id = origin_store_id(change.origin)
    fields = {name: value for name, value in change.fields.items() if name not in rules.store_local}

    if change.deleting:
        action = Action.DELETE
    else:
        action = Action.EDIT if exists else Action.CREATE

    try:
        _check_permission(rules, change, action, store_id, current, exists, fields)
    except PolicyViolation as violation:
        return Rejected(violation.code, violation.message, violation.message_pt_br, violation.field)

    if change.base_revision is not None and current is not None:
        if change.base_revision > current.revision:
            return Rejected(
                "invalid_base_revision",
                f"{change.entity} {change.record_key}: base revision {change.base_revision} "
                f"is newer than the current revision {current.revision}; reload the record",
                f"{change.entity} {change.record_key}: a revisão base {change.base_revision} "
                f"é mais nova que a revisão atual {current.revision}; recarregue o registro",
            )

    if action is Action.DELETE:
        if not exists:
            return _not_found(change)
        assert current is not None and current.data is not None
        return Accepted(
            data=current.data,
            deleted=True,
            owner_store=current.owner_store,
            field_origins=current.field_origins,
            erp_base=current.erp_base,
        )

    previous: Record = dict(current.data) if exists and current and current.data else {}
    origins = dict(current.field_origins) if exists and current else {}
    stale = (
        exists
        and current is not None
        and change.base_revision is not None
        and change.base_revision < current.revision
    )

    if rules.conflict is Conflict.REJECT_STALE and stale:
        assert current is not None
        return Rejected(
            "stale_revision",
            f"{change.entity} {change.record_key} changed since revision "
            f"{change.base_revision} (now {current.revision}); reload it and edit again",
            f"{change.entity} {change.record_key} mudou desde a revisão "
            f"{change.base_revision} (agora {current.revision}); recarregue e edite de novo",
        )

    overridden: list[str] = []
    # A deleted record is created anew: nothing of its previous life is a base for merging.
    erp_base = current.erp_base if exists and current else None
    if rules.conflict is Conflict.ERP_WINS:
        patch = fields
        merged = dict(fields)
    elif rules.conflict is Conflict.FIELD_MERGE:
        patch, overridden = _field_merge_patch(
            change, fields, previous, origins, base_data, erp_base, stale
        )
        merged = {**previous, **patch}
    else:
        patch = fields
        merged = {**previous, **fields}

    try:
        normalized = validate(change.entity, merged)
    except RecordInvalid as invalid:
        return Rejected(
            "record_invalid",
            f"{change.entity} {change.record_key} is invalid: "
            + "; ".join(error.message for error in invalid.errors),
            f"{change.entity} {change.record_key} é inválido: "
            + "; ".join(error.message_pt_br for error in invalid.errors),
            invalid.errors[0].field if invalid.errors else None,
            tuple(error.as_dict() for error in invalid.errors),
        )

    for name in patch:
        if previous.get(name) != normalized.get(name) or name not in origins:
            origins[name] = change.origin
    if change.origin == ERP_ORIGIN:
        # What the ERP sent, not the merge: the ERP's next push is compared with its own.
        erp_base = dict(fields)

    owner_store = current.owner_store if exists and current else None
    if rules.owner is Owner.STORE and owner_store is None:
        owner_store = store_id

    return Accepted(
        data=normalized,
        deleted=False,
        owner_store=owner_store,
        field_origins=origins,
        erp_base=erp_base,
        overridden=tuple(overridden),
        unchanged=exists and normalized == previous,
    )


def _check_permission(
    rules: EntityPolicy,
    change: Change,
    action: Action,
    store_id: str | None,
    current: CurrentRecord | None,
    exists: bool,
    fields: Record,
) -> None:
    if store_id is None:
        check_erp_change(rules, record_key=change.record_key, action=action)
        return

    current_data = current.data if exists and current else None
    if action is Action.EDIT and current_data is not None:
        changed = [name for name, value in fields.items() if current_data.get(name) != value]
    else:
        changed = list(fields)
    check_store_change(
        rules,
        store_id=store_id,
        record_key=change.record_key,
        action=action,
        changed_fields=changed,
        current=current_data,
        accepted=exists,
        owner_store=current.owner_store if exists and current else None,
    )
    if rules.owner is Owner.STORE and action is Action.CREATE:
        declared = fields.get("store_id")
        if declared is not None and declared != store_id:
            raise PolicyViolation(
                "not_owner_store",
                f"{change.entity} {change.record_key} names store {declared!r} but was "
                f"created by store {store_id!r}; a store creates only its own records",
                f"{change.entity} {change.record_key} indica a loja {declared!r} mas foi "
                f"criado pela loja {store_id!r}; uma loja só cria os próprios registros",
                entity=change.entity,
                record_key=change.record_key,
                field="store_id",
            )


def _field_merge_patch(
    change: Change,
    fields: Record,
    previous: Record,
    origins: Mapping[str, str],
    base_data: Record | None,
    erp_base: Record | None,
    stale: bool,
) -> tuple[Record, list[str]]:
    """Return the fields of a change that apply, and those a newer ERP value overrides.

    An ERP push with a stale base revision applies the fields that differ from the
    record at that revision, so store edits made since then to other fields survive. A
    push without a base revision applies the fields that differ from the ERP's previous
    push of the record, and every field of a record the ERP never pushed. A stale store
    edit applies a field unless the ERP changed that field after the base.
    """
    if change.origin == ERP_ORIGIN:
        if stale and base_data is not None:
            reference = base_data
        elif change.base_revision is None and erp_base is not None:
            reference = erp_base
        else:
            return dict(fields), []
        return {name: value for name, value in fields.items() if reference.get(name) != value}, []

    if not stale:
        return dict(fields), []

    base = base_data or {}
    patch: Record = {}
    overridden: list[str] = []
    for name, value in fields.items():
        changed_since_base = previous.get(name) != base.get(name)
        if changed_since_base and origins.get(name) == ERP_ORIGIN:
            overridden.append(name)
            continue
        patch[name] = value
    return patch, overridden


def _not_found(change: Change) -> Rejected:
    return Rejected(
        "record_not_found",
        f"{change.entity} {change.record_key} does not exist; nothing to delete",
        f"{change.entity} {change.record_key} não existe; nada a excluir",
    )


class MissingScopeParent(Exception):
    def __init__(self, entity: str, record_key: str) -> None:
        super().__init__(f"{entity} {record_key} does not exist")
        self.entity = entity
        self.record_key = record_key

    def rejection(self, change: Change) -> Rejected:
        return Rejected(
            "scope_parent_missing",
            f"{change.entity} {change.record_key} refers to {self.entity} {self.record_key!r}, "
            f"which does not exist; create the {self.entity} first",
            f"{change.entity} {change.record_key} refere-se a {self.entity} "
            f"{self.record_key!r}, que não existe; cadastre o {self.entity} antes",
        )


def scope_of(
    rules: EntityPolicy,
    record: Mapping[str, Any],
    owner_store: str | None,
    parent_scopes: Mapping[str, list[str] | None],
) -> list[str] | None:
    """Return the store ids that receive a record, or None for every store.

    `parent_scopes` maps the key of the record a scope comes from (for a price: its
    price table) to that record's scope; MissingScopeParent is raised when it is absent.
    """
    distribution = rules.distribution
    if distribution == "all":
        return None
    if distribution == "origin":
        return [owner_store] if owner_store else []
    if isinstance(distribution, ScopeFieldDistribution):
        listed = record.get(distribution.scope_field) or []
        return sorted(listed) if listed else None
    if isinstance(distribution, ScopeFromDistribution):
        parent_key = str(record.get(distribution.scope_from.field))
        if parent_key not in parent_scopes:
            raise MissingScopeParent(distribution.scope_from.entity, parent_key)
        return parent_scopes[parent_key]
    raise AssertionError(f"unhandled distribution {distribution!r}")
