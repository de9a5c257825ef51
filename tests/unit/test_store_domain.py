"""Rules of the store registry's domain, without database or broker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lojasync.catalog import RecordInvalid, validate_record
from lojasync.digest import content_hash
from lojasync.policy import Policy, PolicyViolation, load_policy
from lojasync.reference import load_reference_tables
from store_registry.domain import (
    DELETE,
    UPSERT,
    EditKind,
    EditOutcome,
    LocalEdit,
    RecordKeyMismatch,
    RecordNotFound,
    Rejection,
    Resolution,
    ServerKeyUnsupported,
    Status,
    StoredRecord,
    apply_rejected,
    apply_resolved,
    assign_server_key,
    canonical_key,
    delete_locally,
    merge_local_edit,
    record_view,
)

POLICY = load_policy()
TABLES = load_reference_tables()
STORE_ID = "loja-1"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CUSTOMER_KEY = "3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f"
OPERATOR_KEY = "9a6c4f0e-1b2d-4c3e-8f5a-6b7c8d9e0f1a"
VALID_CPF = "52998224725"


def validate(entity: str, data: Mapping[str, object]) -> dict[str, Any]:
    return validate_record(entity, data, TABLES)


def customer(**changes: object) -> dict[str, Any]:
    fields: dict[str, object] = {"id": CUSTOMER_KEY, "document": VALID_CPF, "name": "Ana Souza"}
    return validate("customer", {**fields, **changes})


def product(**changes: object) -> dict[str, Any]:
    fields: dict[str, object] = {
        "code": "P-1",
        "description": "Cerveja Pilsen 350 ml",
        "gtins": ["7891000315507"],
        "ncm": "22030000",
        "unit": "UN",
    }
    return validate("product", {**fields, **changes})


def operator(**changes: object) -> dict[str, Any]:
    fields: dict[str, object] = {
        "id": OPERATOR_KEY,
        "store_id": STORE_ID,
        "code": "12",
        "name": "Bia",
        "role": "cashier",
    }
    return validate("operator", {**fields, **changes})


def confirmed(entity: str, key: str, data: dict[str, Any], revision: int = 1) -> StoredRecord:
    return StoredRecord(entity, key, revision=revision, data=data)


def edit(
    entity: str,
    key: str,
    fields: Mapping[str, object],
    current: StoredRecord | None,
    *,
    base_revision: int | None = None,
    event_id: str = "event-1",
    now: datetime = NOW,
) -> EditOutcome:
    return merge_local_edit(
        POLICY,
        validate,
        store_id=STORE_ID,
        edit=LocalEdit(entity, key, fields, base_revision),
        current=current,
        event_id=event_id,
        now=now,
    )


def resolution(
    revision: int,
    record: dict[str, Any] | None,
    *,
    entity: str = "customer",
    key: str = CUSTOMER_KEY,
    causation_id: str | None = "other-event",
    deleted: bool = False,
    out_of_scope: bool = False,
) -> Resolution:
    return Resolution(
        event_id=f"resolved-{revision}",
        entity=entity,
        record_key=key,
        revision=revision,
        causation_id=causation_id,
        record=record,
        deleted=deleted,
        out_of_scope=out_of_scope,
    )


def rejection(
    causation_id: str, revision: int | None, current: dict[str, Any] | None, deleted: bool = False
) -> Rejection:
    return Rejection(
        event_id="rejected-1",
        entity="customer",
        record_key=CUSTOMER_KEY,
        causation_id=causation_id,
        revision=revision,
        code="record_invalid",
        message="invalid",
        message_pt_br="inválido",
        field="name",
        errors=[],
        current=current,
        deleted=deleted,
    )


# --- Creating -------------------------------------------------------------------------------


def test_create_is_pending_with_whole_record() -> None:
    outcome = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana Souza"}, None)

    assert outcome.kind is EditKind.PENDING
    assert outcome.record.pending == customer()
    assert outcome.record.pending_action == UPSERT
    assert outcome.record.pending_event_id == "event-1"
    assert outcome.record.pending_since == NOW
    assert outcome.record.revision == 0
    assert outcome.change is not None
    assert outcome.change.fields == customer()
    assert outcome.change.base_revision == 0
    assert outcome.change.event_data() == {"action": UPSERT, "fields": customer()}


def test_create_keeps_store_local_fields_here() -> None:
    customer_rules = POLICY.for_entity("customer")
    local_email = customer_rules.model_copy(update={"store_local": frozenset({"email"})})
    policy = Policy({**POLICY.entities, "customer": local_email}, source="test")
    fields = {"document": VALID_CPF, "name": "Ana Souza", "email": "ana@example.com"}

    outcome = merge_local_edit(
        policy,
        validate,
        store_id=STORE_ID,
        edit=LocalEdit("customer", CUSTOMER_KEY, fields),
        current=None,
        event_id="event-1",
        now=NOW,
    )

    assert outcome.change is not None
    assert "email" not in outcome.change.fields
    assert outcome.record.pending is not None
    assert "email" not in outcome.record.pending
    assert outcome.record.local == {"email": "ana@example.com"}


def test_create_fills_key_field_from_request_key() -> None:
    outcome = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana"}, None)

    assert outcome.record.merged_view()["id"] == CUSTOMER_KEY


def test_create_normalizes_document() -> None:
    outcome = edit("customer", CUSTOMER_KEY, {"document": "529.982.247-25", "name": "Ana"}, None)

    assert outcome.record.merged_view()["document"] == VALID_CPF


def test_create_rejects_invalid_cpf() -> None:
    with pytest.raises(RecordInvalid) as raised:
        edit("customer", CUSTOMER_KEY, {"document": "529.982.247-26", "name": "Ana"}, None)

    assert [(e.field, e.rule) for e in raised.value.errors] == [("document", "cpf_check_digit")]


def test_create_rejects_key_fields_of_other_record() -> None:
    other_key = "00000000-0000-4000-8000-000000000001"

    with pytest.raises(RecordKeyMismatch) as raised:
        edit("customer", CUSTOMER_KEY, {"id": other_key, "document": VALID_CPF, "name": "A"}, None)

    assert raised.value.fields_key == other_key


def test_create_of_product_is_erp_owned() -> None:
    with pytest.raises(PolicyViolation) as raised:
        edit("product", "P-1", product(), None)

    assert raised.value.code == "erp_owned"


def test_invalid_product_edit_reports_policy_first() -> None:
    current = confirmed("product", "P-1", product())

    with pytest.raises(PolicyViolation) as raised:
        edit("product", "P-1", {"ncm": "not an ncm"}, current)

    assert raised.value.code == "erp_owned"
    assert raised.value.field == "ncm"


def test_operator_create_gets_this_store() -> None:
    fields = {"code": "12", "name": "Bia", "role": "cashier"}

    outcome = edit("operator", OPERATOR_KEY, fields, None)

    assert outcome.change is not None
    assert outcome.change.fields["store_id"] == STORE_ID


def test_operator_create_for_other_store_rejected() -> None:
    fields = {"store_id": "loja-2", "code": "12", "name": "Bia", "role": "cashier"}

    with pytest.raises(PolicyViolation) as raised:
        edit("operator", OPERATOR_KEY, fields, None)

    assert raised.value.code == "not_owner_store"


def test_operator_of_other_store_cannot_be_edited() -> None:
    current = confirmed("operator", OPERATOR_KEY, operator(store_id="loja-2"))

    with pytest.raises(PolicyViolation) as raised:
        edit("operator", OPERATOR_KEY, {"name": "Carla"}, current)

    assert raised.value.code == "not_owner_store"


def test_recreate_after_tombstone_sends_whole_record() -> None:
    tombstone = StoredRecord("operator", OPERATOR_KEY, revision=4, deleted=True)

    outcome = edit("operator", OPERATOR_KEY, operator(), tombstone)

    assert outcome.change is not None
    assert outcome.change.fields == operator()
    assert outcome.change.base_revision == 4
    assert outcome.record.status is Status.PENDING


# --- Editing --------------------------------------------------------------------------------


def test_edit_sends_changed_shared_fields_only() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer(), revision=3)

    outcome = edit("customer", CUSTOMER_KEY, {"name": "Bia", "document": VALID_CPF}, current)

    assert outcome.kind is EditKind.PENDING
    assert outcome.record.pending == {"name": "Bia"}
    assert outcome.record.data == customer()
    assert outcome.change is not None
    assert outcome.change.fields == {"name": "Bia"}
    assert outcome.change.base_revision == 3


def test_second_edit_merges_pending_patch() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())
    first = edit("customer", CUSTOMER_KEY, {"name": "Bia"}, current)
    later = NOW + timedelta(minutes=5)

    second = edit(
        "customer",
        CUSTOMER_KEY,
        {"email": "bia@example.com"},
        first.record,
        event_id="e2",
        now=later,
    )

    assert second.record.pending == {"name": "Bia", "email": "bia@example.com"}
    assert second.record.pending_event_id == "e2"
    assert second.record.pending_since == NOW
    assert second.change is not None
    assert second.change.fields == {"email": "bia@example.com"}


def test_edit_of_pending_create_sends_whole_record() -> None:
    created = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana Souza"}, None)

    outcome = edit("customer", CUSTOMER_KEY, {"name": "Bia"}, created.record, event_id="e2")

    assert outcome.change is not None
    assert outcome.change.fields == customer(name="Bia")
    assert outcome.change.base_revision == 0


def test_edit_with_same_values_changes_nothing() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())

    outcome = edit("customer", CUSTOMER_KEY, {"document": "529.982.247-25"}, current)

    assert outcome.kind is EditKind.UNCHANGED
    assert outcome.change is None
    assert outcome.record == current


def test_document_change_after_accept_is_immutable() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())

    with pytest.raises(PolicyViolation) as raised:
        edit("customer", CUSTOMER_KEY, {"document": "11144477735"}, current)

    assert raised.value.code == "immutable_field"
    assert raised.value.field == "document"


def test_document_change_before_accept_allowed() -> None:
    created = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana Souza"}, None)

    outcome = edit("customer", CUSTOMER_KEY, {"document": "11144477735"}, created.record)

    assert outcome.kind is EditKind.PENDING


def test_stale_base_revision_conflicts() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer(), revision=2)

    with pytest.raises(PolicyViolation) as raised:
        edit("customer", CUSTOMER_KEY, {"name": "Bia"}, current, base_revision=1)

    assert raised.value.code == "stale_revision"


def test_shelf_location_edit_stays_local() -> None:
    current = confirmed("product", "P-1", product())

    outcome = edit("product", "P-1", {"shelf_location": "A-03"}, current)

    assert outcome.kind is EditKind.LOCAL
    assert outcome.change is None
    assert outcome.record.local == {"shelf_location": "A-03"}
    assert outcome.record.data == product()
    assert outcome.record.pending is None
    assert outcome.record.merged_view()["shelf_location"] == "A-03"


def test_product_description_edit_is_erp_owned() -> None:
    current = confirmed("product", "P-1", product())

    with pytest.raises(PolicyViolation) as raised:
        edit("product", "P-1", {"description": "Other"}, current)

    assert raised.value.code == "erp_owned"


def test_edit_after_pending_delete_sends_whole_record() -> None:
    current = confirmed("operator", OPERATOR_KEY, operator())
    deleting = delete_locally(
        POLICY,
        store_id=STORE_ID,
        entity="operator",
        key=OPERATOR_KEY,
        base_revision=None,
        current=current,
        event_id="delete-1",
        now=NOW,
    )

    outcome = edit("operator", OPERATOR_KEY, {"name": "Carla"}, deleting.record, event_id="e2")

    assert outcome.change is not None
    assert outcome.change.fields == operator(name="Carla")
    assert outcome.record.pending_action == UPSERT


# --- Deleting -------------------------------------------------------------------------------


def delete(
    current: StoredRecord | None, entity: str = "operator", key: str = OPERATOR_KEY
) -> EditOutcome:
    return delete_locally(
        POLICY,
        store_id=STORE_ID,
        entity=entity,
        key=key,
        base_revision=None,
        current=current,
        event_id="delete-1",
        now=NOW,
    )


def test_delete_is_pending() -> None:
    current = confirmed("operator", OPERATOR_KEY, operator(), revision=2)

    outcome = delete(current)

    assert outcome.kind is EditKind.PENDING
    assert outcome.record.pending_action == DELETE
    assert outcome.record.data == operator()
    assert outcome.change is not None
    assert outcome.change.event_data() == {"action": DELETE, "fields": {}}
    assert outcome.change.base_revision == 2


def test_repeated_delete_changes_nothing() -> None:
    pending = delete(confirmed("operator", OPERATOR_KEY, operator())).record

    outcome = delete(pending)

    assert outcome.kind is EditKind.UNCHANGED
    assert outcome.change is None


def test_delete_of_missing_record_not_found() -> None:
    with pytest.raises(RecordNotFound):
        delete(None)


def test_delete_of_tombstone_not_found() -> None:
    with pytest.raises(RecordNotFound):
        delete(StoredRecord("operator", OPERATOR_KEY, revision=3, deleted=True))


def test_customer_delete_not_allowed() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())

    with pytest.raises(PolicyViolation) as raised:
        delete(current, "customer", CUSTOMER_KEY)

    assert raised.value.code == "action_not_allowed"


# --- Keys -----------------------------------------------------------------------------------


def test_server_key_for_customer() -> None:
    created = assign_server_key("customer", {"id": "ignored", "name": "Ana"}, CUSTOMER_KEY)

    assert created.record_key == CUSTOMER_KEY
    assert created.fields == {"id": CUSTOMER_KEY, "name": "Ana"}
    assert created.base_revision == 0


def test_server_key_refused_for_product() -> None:
    with pytest.raises(ServerKeyUnsupported):
        assign_server_key("product", {}, CUSTOMER_KEY)


def test_canonical_key_lowercases_uuid() -> None:
    assert canonical_key("customer", CUSTOMER_KEY.upper()) == CUSTOMER_KEY


def test_canonical_key_keeps_composite_key() -> None:
    assert canonical_key("cst", "icms:00") == "icms:00"


def test_canonical_key_rejects_malformed_uuid() -> None:
    with pytest.raises(RecordInvalid) as raised:
        canonical_key("customer", "not-a-uuid")

    assert raised.value.errors[0].rule == "uuid_format"


# --- record.resolved ------------------------------------------------------------------------


def test_resolved_creates_record() -> None:
    result = apply_resolved(None, resolution(1, customer()))

    assert result is not None
    assert result.revision == 1
    assert result.data == customer()
    assert result.content_hash == content_hash(customer())
    assert result.status is Status.CONFIRMED


def test_resolved_older_revision_ignored() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer(), revision=3)

    assert apply_resolved(current, resolution(2, customer(name="Old"))) is None


def test_resolved_same_revision_ignored() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer(), revision=3)

    assert apply_resolved(current, resolution(3, customer(name="Again"))) is None


def test_resolved_keeps_record_as_sent() -> None:
    record = product()

    result = apply_resolved(None, resolution(1, record, entity="product", key="P-1"))

    assert result is not None
    assert result.data == record
    assert result.content_hash == content_hash(record)


def test_resolved_delete_leaves_tombstone() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())

    result = apply_resolved(current, resolution(2, customer(), deleted=True))

    assert result is not None
    assert result.deleted
    assert result.data is None
    assert result.content_hash is None
    assert result.revision == 2
    assert result.status is Status.DELETED


def test_out_of_scope_keeps_local_fields() -> None:
    current = replace(confirmed("product", "P-1", product()), local={"shelf_location": "A-03"})

    result = apply_resolved(
        current, resolution(2, product(), entity="product", key="P-1", out_of_scope=True)
    )

    assert result is not None
    assert result.deleted
    assert result.local == {"shelf_location": "A-03"}


def test_resolved_with_matching_causation_clears_pending() -> None:
    pending = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana Souza"}, None)

    result = apply_resolved(pending.record, resolution(1, customer(), causation_id="event-1"))

    assert result is not None
    assert result.pending is None
    assert result.pending_action is None
    assert result.pending_event_id is None
    assert result.pending_since is None
    assert result.status is Status.CONFIRMED


def test_resolved_of_other_change_keeps_pending() -> None:
    current = confirmed("customer", CUSTOMER_KEY, customer())
    pending = edit("customer", CUSTOMER_KEY, {"name": "Bia"}, current).record

    result = apply_resolved(pending, resolution(2, customer(email="ana@example.com")))

    assert result is not None
    assert result.pending == {"name": "Bia"}
    assert result.data == customer(email="ana@example.com")
    assert result.merged_view()["name"] == "Bia"
    assert result.merged_view()["email"] == "ana@example.com"


def test_resolved_never_touches_local_fields() -> None:
    current = replace(confirmed("product", "P-1", product()), local={"shelf_location": "A-03"})

    result = apply_resolved(
        current, resolution(2, product(description="New"), entity="product", key="P-1")
    )

    assert result is not None
    assert result.local == {"shelf_location": "A-03"}
    assert result.merged_view()["shelf_location"] == "A-03"


# --- record.rejected ------------------------------------------------------------------------


def pending_edit() -> StoredRecord:
    current = confirmed("customer", CUSTOMER_KEY, customer(), revision=2)
    return edit("customer", CUSTOMER_KEY, {"name": "Bia"}, current).record


def test_rejected_of_other_event_ignored() -> None:
    assert apply_rejected(pending_edit(), rejection("older-event", 2, customer()), NOW) is None


def test_rejected_of_unknown_record_ignored() -> None:
    assert apply_rejected(None, rejection("event-1", 2, customer()), NOW) is None


def test_rejected_restores_current() -> None:
    authoritative = customer(name="Ana Maria")

    result = apply_rejected(pending_edit(), rejection("event-1", 3, authoritative), NOW)

    assert result is not None
    assert result.revision == 3
    assert result.data == authoritative
    assert result.pending is None
    assert result.pending_action is None
    assert result.status is Status.CONFIRMED


def test_rejected_records_reason() -> None:
    result = apply_rejected(pending_edit(), rejection("event-1", 2, customer()), NOW)

    assert result is not None
    assert result.last_rejection == {
        "code": "record_invalid",
        "message": "invalid",
        "message_pt_br": "inválido",
        "field": "name",
        "errors": [],
        "at": NOW.isoformat(),
    }


def test_rejected_with_older_revision_keeps_confirmed_data() -> None:
    current = replace(pending_edit(), revision=5, data=customer(name="Newer"))

    result = apply_rejected(current, rejection("event-1", 4, customer(name="Older")), NOW)

    assert result is not None
    assert result.revision == 5
    assert result.data == customer(name="Newer")
    assert result.pending is None


def test_rejected_create_becomes_tombstone() -> None:
    created = edit("customer", CUSTOMER_KEY, {"document": VALID_CPF, "name": "Ana"}, None).record

    result = apply_rejected(created, rejection("event-1", None, None), NOW)

    assert result is not None
    assert result.deleted
    assert result.revision == 0
    assert result.pending is None
    assert not result.live
    assert result.last_rejection is not None


def test_rejected_with_deleted_current_leaves_tombstone() -> None:
    result = apply_rejected(pending_edit(), rejection("event-1", 3, None, deleted=True), NOW)

    assert result is not None
    assert result.deleted
    assert result.data is None
    assert result.revision == 3


# --- Views ----------------------------------------------------------------------------------


def test_view_of_pending_edit() -> None:
    view = record_view(pending_edit())

    assert view["status"] == "pending"
    assert view["record"] == customer(name="Bia")
    assert view["confirmed"] == customer()
    assert view["pending"] == {"name": "Bia"}
    assert view["revision"] == 2
