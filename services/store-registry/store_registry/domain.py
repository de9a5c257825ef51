"""The store registry's rules, as pure functions: no database, no broker, no clock.

A store keeps three layers of each record: `data`, the shared fields as the
orchestrator last resolved them; `pending`, the shared fields edited here and not yet
decided; and `local`, the store-local fields, which never leave the store. The API
returns the three merged, a later layer overriding an earlier one.

`merge_local_edit` and `delete_locally` turn a back-office request into the new stored
state plus the `record.changed` to publish; `apply_resolved` and `apply_rejected` apply
the orchestrator's decisions. The handlers supply event ids and the time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from lojasync.catalog import RecordInvalid, entity_spec, record_key
from lojasync.digest import content_hash
from lojasync.errors import LojasyncError
from lojasync.policy import Action, Owner, Policy, PolicyViolation, check_store_change

Record = dict[str, Any]
Validator = Callable[[str, Mapping[str, object]], Record]

UPSERT = "upsert"
DELETE = "delete"

# The field of a store-owned record that names the store it belongs to (operator).
OWNER_STORE_FIELD = "store_id"
# The key field of the entities whose records a store creates under a generated UUID.
SERVER_KEY_FIELD = "id"


class StoreRegistryError(LojasyncError):
    """Root of the errors the store registry raises for a request it cannot carry out."""

    code = "store_registry_error"

    def __init__(
        self, message: str, message_pt_br: str, *, entity: str, record_key: str | None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.message_pt_br = message_pt_br
        self.entity = entity
        self.record_key = record_key

    def as_dict(self) -> dict[str, object]:
        detail: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "entity": self.entity,
        }
        if self.record_key is not None:
            detail["record_key"] = self.record_key
        return detail


class RecordNotFound(StoreRegistryError):
    """The store has no live record under this key."""

    code = "record_not_found"

    def __init__(self, entity: str, record_key: str) -> None:
        super().__init__(
            f"{entity} {record_key} does not exist in this store; check the entity and key",
            f"{entity} {record_key} não existe nesta loja; confira a entidade e a chave",
            entity=entity,
            record_key=record_key,
        )


class RecordKeyMismatch(StoreRegistryError):
    """The key fields of a record do not produce the key named in the request."""

    code = "record_key_mismatch"

    def __init__(
        self, entity: str, record_key: str, fields_key: str, key_fields: tuple[str, ...]
    ) -> None:
        names = ", ".join(key_fields)
        super().__init__(
            f"{entity} {record_key}: the key fields ({names}) give the key {fields_key!r}, not "
            f"{record_key!r}; send key fields that match the URL, or use the URL of "
            f"{fields_key!r}",
            f"{entity} {record_key}: os campos da chave ({names}) formam a chave "
            f"{fields_key!r}, não {record_key!r}; envie campos de chave iguais aos da URL, ou "
            f"use a URL de {fields_key!r}",
            entity=entity,
            record_key=record_key,
        )
        self.fields_key = fields_key


class ServerKeyUnsupported(StoreRegistryError):
    """A create without a key for an entity whose key is not a generated UUID."""

    code = "key_required"

    def __init__(self, entity: str, key_fields: tuple[str, ...]) -> None:
        names = ", ".join(key_fields)
        super().__init__(
            f"{entity} records are keyed by {names}, which the store cannot generate; create "
            f"them with PUT /v1/records/{entity}/{{key}}",
            f"registros de {entity} têm a chave {names}, que a loja não pode gerar; crie-os com "
            f"PUT /v1/records/{entity}/{{chave}}",
            entity=entity,
            record_key=None,
        )


def stale_revision(entity: str, key: str, base_revision: int, revision: int) -> PolicyViolation:
    return PolicyViolation(
        "stale_revision",
        f"{entity} {key} is at revision {revision}, but the edit started from revision "
        f"{base_revision}; reload the record and edit it again",
        f"{entity} {key} está na revisão {revision}, mas a edição partiu da revisão "
        f"{base_revision}; recarregue o registro e edite de novo",
        entity=entity,
        record_key=key,
    )


class Status(StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    DELETED = "deleted"


@dataclass(frozen=True)
class StoredRecord:
    """One record in this store (a row of `store_record`)."""

    entity: str
    record_key: str
    revision: int = 0
    data: Record | None = None
    deleted: bool = False
    local: Record = field(default_factory=dict)
    pending: Record | None = None
    pending_action: str | None = None
    pending_event_id: str | None = None
    pending_since: datetime | None = None
    last_rejection: Record | None = None

    @property
    def content_hash(self) -> str | None:
        return content_hash(self.data) if self.data is not None else None

    @property
    def accepted(self) -> bool:
        """Whether the orchestrator resolved the record and it is not deleted."""
        return self.revision > 0 and not self.deleted and self.data is not None

    @property
    def live(self) -> bool:
        """Whether a reader sees the record: confirmed, or created or edited here."""
        return not self.deleted or self.pending_action == UPSERT

    @property
    def status(self) -> Status:
        if self.pending_action is not None:
            return Status.PENDING
        if self.deleted:
            return Status.DELETED
        return Status.CONFIRMED

    def shared_view(self) -> Record:
        """Return the shared fields: confirmed data with the pending patch on top."""
        return {**(self.data or {}), **(self.pending or {})}

    def merged_view(self) -> Record:
        return {**self.shared_view(), **self.local}


@dataclass(frozen=True)
class LocalEdit:
    """A back-office request to create or change one record."""

    entity: str
    record_key: str
    fields: Mapping[str, object]
    base_revision: int | None = None


@dataclass(frozen=True)
class ChangeToPublish:
    """The content of the `record.changed` event a local edit produces."""

    event_id: str
    entity: str
    record_key: str
    action: str
    fields: Record
    base_revision: int

    def event_data(self) -> Record:
        return {"action": self.action, "fields": self.fields}


class EditKind(StrEnum):
    UNCHANGED = "unchanged"  # the request changes nothing
    LOCAL = "local"  # only store-local fields changed; saved, nothing to publish
    PENDING = "pending"  # shared fields changed; saved as pending and published


@dataclass(frozen=True)
class EditOutcome:
    kind: EditKind
    record: StoredRecord
    change: ChangeToPublish | None = None


# --- Local edits --------------------------------------------------------------------------


def canonical_key(entity: str, key: str) -> str:
    """Normalize a request key the way the catalog normalizes the key field.

    Entities with a composite key keep the key as given, since a key field may itself
    contain ":". Raises RecordInvalid naming the key field when the key is malformed.
    """
    key_fields = entity_spec(entity).key_fields
    if len(key_fields) != 1:
        return key
    return record_key(entity, {key_fields[0]: key})


def assign_server_key(entity: str, fields: Mapping[str, object], new_id: str) -> LocalEdit:
    """Build the create of a record keyed by a UUID the store generates.

    Only entities whose key is the single field `id` (customer, operator) qualify; any
    `id` in `fields` is replaced by `new_id`. Raises ServerKeyUnsupported otherwise.
    """
    key_fields = entity_spec(entity).key_fields
    if key_fields != (SERVER_KEY_FIELD,):
        raise ServerKeyUnsupported(entity, key_fields)
    return LocalEdit(entity, new_id, {**fields, SERVER_KEY_FIELD: new_id}, base_revision=0)


def merge_local_edit(
    policy: Policy,
    validate: Validator,
    *,
    store_id: str,
    edit: LocalEdit,
    current: StoredRecord | None,
    event_id: str,
    now: datetime,
) -> EditOutcome:
    """Merge a local edit onto the record and return the new state and the change to send.

    Creates the record when the store has no live one. Raises PolicyViolation when the
    policy forbids the edit or `base_revision` is not the stored revision, RecordInvalid
    when the merged record fails validation, and RecordKeyMismatch when its key fields
    name another record.
    """
    entity = edit.entity
    rules = policy.for_entity(entity)
    existing = current if current is not None and current.live else None
    revision = current.revision if current is not None else 0

    if edit.base_revision is not None and edit.base_revision != revision:
        raise stale_revision(entity, edit.record_key, edit.base_revision, revision)

    accepted = existing is not None and existing.accepted
    shared_before = existing.shared_view() if existing is not None else {}
    local_before = current.local if current is not None else {}
    view_before = {**shared_before, **local_before}

    normalized = _authorize_and_validate(
        policy,
        validate,
        store_id=store_id,
        edit=edit,
        view_before=view_before,
        accepted_shared=shared_before if accepted else None,
    )
    shared, local = policy.split_store_local(entity, normalized)
    changed = _changed_fields(view_before, normalized)
    changed_shared = [name for name in changed if name not in rules.store_local]
    base = current if current is not None else StoredRecord(entity, edit.record_key)

    if not changed:
        return EditOutcome(EditKind.UNCHANGED, base)
    if not changed_shared:
        return EditOutcome(EditKind.LOCAL, replace(base, local=local))

    # When the orchestrator has not accepted this record, or a delete of it is pending, it
    # needs the whole record. So the pending patch and the change carry every shared field.
    whole_record = not accepted or (existing is not None and existing.pending_action == DELETE)
    if whole_record:
        pending = dict(shared)
        sent = dict(shared)
    else:
        sent = {name: shared.get(name) for name in changed_shared}
        pending = {**(base.pending or {}), **sent}

    record = replace(
        base,
        local=local,
        pending=pending,
        pending_action=UPSERT,
        pending_event_id=event_id,
        pending_since=base.pending_since if base.pending_action == UPSERT else now,
    )
    change = ChangeToPublish(event_id, entity, edit.record_key, UPSERT, sent, base.revision)
    return EditOutcome(EditKind.PENDING, record, change)


def _authorize_and_validate(
    policy: Policy,
    validate: Validator,
    *,
    store_id: str,
    edit: LocalEdit,
    view_before: Record,
    accepted_shared: Record | None,
) -> Record:
    """Merge the edit onto the current view, check the policy, and return it normalized.

    `accepted_shared` is the record's shared view when the orchestrator accepted it, else
    None (the edit is then a create). The policy check gets the fields whose normalized
    value changed. When validation fails, it gets the raw changes instead, so that a
    forbidden edit reports the policy and not the invalid value.
    """
    entity = edit.entity
    rules = policy.for_entity(entity)
    spec = entity_spec(entity)
    action = Action.CREATE if accepted_shared is None else Action.EDIT

    merged = {**view_before, **edit.fields}
    if action is Action.CREATE:
        merged = _with_create_defaults(rules.owner, spec.key_fields, merged, edit, store_id)

    def check_policy(record: Mapping[str, object]) -> None:
        check_store_change(
            rules,
            store_id=store_id,
            record_key=edit.record_key,
            action=action,
            changed_fields=_changed_fields(view_before, record),
            current=accepted_shared,
            accepted=accepted_shared is not None,
            owner_store=_owner_store(
                rules.owner, accepted_shared if accepted_shared is not None else record
            ),
        )

    try:
        normalized = validate(entity, merged)
    except RecordInvalid:
        check_policy(merged)
        raise
    check_policy(normalized)

    fields_key = record_key(entity, normalized)
    if fields_key != edit.record_key:
        raise RecordKeyMismatch(entity, edit.record_key, fields_key, spec.key_fields)
    return normalized


def delete_locally(
    policy: Policy,
    *,
    store_id: str,
    entity: str,
    key: str,
    base_revision: int | None,
    current: StoredRecord | None,
    event_id: str,
    now: datetime,
) -> EditOutcome:
    """Mark a record as pending deletion and return the change to send.

    Raises RecordNotFound when the store has no live record, and PolicyViolation when
    stores may not delete it. Deleting a record whose delete is pending changes nothing.
    """
    if current is None or not current.live:
        raise RecordNotFound(entity, key)
    if base_revision is not None and base_revision != current.revision:
        raise stale_revision(entity, key, base_revision, current.revision)
    if current.pending_action == DELETE:
        return EditOutcome(EditKind.UNCHANGED, current)

    rules = policy.for_entity(entity)
    shared = current.shared_view()
    check_store_change(
        rules,
        store_id=store_id,
        record_key=key,
        action=Action.DELETE,
        changed_fields=[],
        current=shared,
        accepted=current.accepted,
        owner_store=_owner_store(rules.owner, shared),
    )

    record = replace(
        current,
        pending=None,
        pending_action=DELETE,
        pending_event_id=event_id,
        pending_since=now,
    )
    change = ChangeToPublish(event_id, entity, key, DELETE, {}, current.revision)
    return EditOutcome(EditKind.PENDING, record, change)


def _with_create_defaults(
    owner: Owner,
    key_fields: tuple[str, ...],
    record: Record,
    edit: LocalEdit,
    store_id: str,
) -> Record:
    """Fill a single key field from the request key, and the owner store of a store-owned
    record, when the request left them out."""
    filled = dict(record)
    if len(key_fields) == 1 and filled.get(key_fields[0]) is None:
        filled[key_fields[0]] = edit.record_key
    if owner is Owner.STORE and filled.get(OWNER_STORE_FIELD) is None:
        filled[OWNER_STORE_FIELD] = store_id
    return filled


def _owner_store(owner: Owner, record: Mapping[str, object]) -> str | None:
    if owner is not Owner.STORE:
        return None
    value = record.get(OWNER_STORE_FIELD)
    return value if isinstance(value, str) else None


def _changed_fields(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    names = sorted(set(before) | set(after))
    return [name for name in names if before.get(name) != after.get(name)]


# --- Decisions of the orchestrator ---------------------------------------------------------


class Resolution(NamedTuple):
    """A `record.resolved` event, parsed. A named tuple: a store parses thousands per second."""

    event_id: str
    entity: str
    record_key: str
    revision: int
    causation_id: str | None
    record: Record | None
    deleted: bool
    out_of_scope: bool


@dataclass(frozen=True)
class Rejection:
    """A `record.rejected` event, parsed."""

    event_id: str
    entity: str
    record_key: str
    causation_id: str
    revision: int | None
    code: str
    message: str
    message_pt_br: str
    field: str | None
    errors: list[Record]
    current: Record | None
    deleted: bool
    # The record exists centrally but outside this store's scope: drop the local copy.
    out_of_scope: bool = False

    def reason(self, now: datetime) -> Record:
        return {
            "code": self.code,
            "message": self.message,
            "message_pt_br": self.message_pt_br,
            "field": self.field,
            "errors": self.errors,
            "at": now.isoformat(),
        }


def apply_resolved(current: StoredRecord | None, resolution: Resolution) -> StoredRecord | None:
    """Return the state after a resolved revision, or None when it changes nothing.

    A revision not newer than the stored one is a duplicate or a late delivery. The
    confirmed data is the record exactly as resolved, so its content hash equals the
    orchestrator's. The pending edit clears only when this revision decided it; a
    revision caused by another change leaves it waiting for its own decision. The
    store-local fields never change here.
    """
    if resolution.revision <= (current.revision if current is not None else 0):
        return None
    removed = resolution.deleted or resolution.out_of_scope or resolution.record is None
    data = None if removed or resolution.record is None else dict(resolution.record)
    # Built in one call rather than with dataclasses.replace: a store applies thousands of
    # these per second, and replace costs twice a construction.
    if current is None:
        return StoredRecord(
            resolution.entity, resolution.record_key, resolution.revision, data, removed
        )
    # The pending edit clears when this revision is its decision.
    cleared = current.pending_event_id is not None and (
        current.pending_event_id == resolution.causation_id
    )
    return StoredRecord(
        current.entity,
        current.record_key,
        resolution.revision,
        data,
        removed,
        current.local,
        None if cleared else current.pending,
        None if cleared else current.pending_action,
        None if cleared else current.pending_event_id,
        None if cleared else current.pending_since,
        current.last_rejection,
    )


def apply_rejected(
    current: StoredRecord | None, rejection: Rejection, now: datetime
) -> StoredRecord | None:
    """Return the state after a rejection of this store's pending edit, or None.

    A rejection of any other event (an older edit that a later one superseded) changes
    nothing. Otherwise the pending edit is dropped, the reason kept in `last_rejection`,
    and the authoritative state restored when it is not older than the stored one. A
    create the orchestrator never accepted becomes a tombstone at revision 0, which keeps
    the reason readable while the record no longer counts as live.
    """
    if current is None or current.pending_event_id != rejection.causation_id:
        return None

    updated = replace(_without_pending(current), last_rejection=rejection.reason(now))
    if rejection.out_of_scope:
        return replace(updated, data=None, deleted=True)
    if rejection.revision is None:
        if current.revision == 0:
            return replace(updated, data=None, deleted=True)
        # NOTE: the orchestrator reports that the record does not exist although this store holds a
        # resolved revision of it; the confirmed state stays until a resolved event changes it.
        return updated

    if rejection.revision < current.revision:
        return updated
    if rejection.deleted or rejection.current is None:
        return replace(updated, revision=rejection.revision, data=None, deleted=True)
    return replace(
        updated, revision=rejection.revision, data=dict(rejection.current), deleted=False
    )


def _without_pending(record: StoredRecord) -> StoredRecord:
    return replace(
        record, pending=None, pending_action=None, pending_event_id=None, pending_since=None
    )


# --- Views --------------------------------------------------------------------------------


def record_view(record: StoredRecord) -> Record:
    """Build the API representation of a stored record."""
    return {
        "entity": record.entity,
        "record_key": record.record_key,
        "revision": record.revision,
        "status": record.status.value,
        "record": record.merged_view(),
        "confirmed": record.data,
        "local": record.local,
        "pending": record.pending,
        "pending_action": record.pending_action,
        "last_rejection": record.last_rejection,
    }
