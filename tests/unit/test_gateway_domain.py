"""Unit tests of the ERP gateway's domain rules: no database, no broker."""

from __future__ import annotations

from typing import Any

import pytest

from erp_gateway.domain import (
    AcceptedChange,
    DeliveryOutcome,
    PushedChange,
    RejectedChange,
    decide_change,
    delivery_outcome,
)
from erp_gateway.settings import GatewaySettings
from lojasync.envelope import ERP_ORIGIN, RECORD_CHANGED
from lojasync.policy import Policy, load_policy
from lojasync.reference import ReferenceTables, load_reference_tables

OPERATOR_ID = "6f1c2b7e-1d2a-4c39-9d7e-2b1f0c9a8e11"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def tables() -> ReferenceTables:
    return load_reference_tables()


def product(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "code": "P-1",
        "description": "Cerveja Pilsen 350 ml",
        "gtins": ["7891000315507"],
        "ncm": "2203.00.00",
        "cest": "0302100",
        "unit": "UN",
    }
    record.update(changes)
    return record


def operator() -> dict[str, object]:
    return {
        "id": OPERATOR_ID,
        "store_id": "loja-1",
        "code": "123",
        "name": "Ana",
        "role": "cashier",
    }


def accepted(decision: object) -> AcceptedChange:
    assert isinstance(decision, AcceptedChange), decision
    return decision


def rejected(decision: object) -> RejectedChange:
    assert isinstance(decision, RejectedChange), decision
    return decision


def rules_of(decision: RejectedChange) -> list[tuple[object, object]]:
    return [(error.get("field"), error.get("rule")) for error in decision.errors]


def test_accepts_valid_product(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product())

    change = accepted(decide_change(item, policy, tables))

    assert change.record_key == "P-1"
    assert change.action == "upsert"
    assert change.fields["ncm"] == "22030000"


def test_accepted_fields_leave_out_store_local(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product())

    change = accepted(decide_change(item, policy, tables))

    assert "shelf_location" not in change.fields


def test_envelope_of_accepted_product(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(), change_id="erp-42")
    change = accepted(decide_change(item, policy, tables))

    envelope = change.to_envelope()

    assert envelope.type == RECORD_CHANGED
    assert envelope.source == "lojasync/erp-gateway"
    assert envelope.origin == ERP_ORIGIN
    assert envelope.entity == "product"
    assert envelope.recordkey == "P-1"
    assert envelope.subject == "product/P-1"
    assert envelope.correlationid == "erp-42"
    assert envelope.baserevision is None
    assert envelope.data == {"action": "upsert", "fields": change.fields}


def test_envelope_carries_base_revision_sent(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(), base_revision=3)

    envelope = accepted(decide_change(item, policy, tables)).to_envelope()

    assert envelope.baserevision == 3


def test_rejects_unknown_entity(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="produto", record=product())

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("entity", "unknown_entity")]
    assert "product" in str(decision.errors[0]["message"])


def test_rejects_unknown_action(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", action="merge", record=product())

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("action", "unknown_action")]


def test_rejects_gtin_with_bad_check_digit(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(gtins=["7891000315508"]))

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("gtins.0", "gtin_check_digit")]
    assert decision.record_key == "P-1"


def test_rejects_unknown_ncm(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(ncm="99999999", cest=None))

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("ncm", "ncm_unknown")]


def test_rejects_cest_not_matching_ncm(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(cest="0100100"))

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("cest", "cest_ncm_mismatch")]


def test_rejects_money_sent_as_float(policy: Policy, tables: ReferenceTables) -> None:
    record = {"table": "VAREJO", "product": "P-1", "price": 12.9}
    item = PushedChange(entity="price", record=record)

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("price", "money_not_string")]
    assert decision.record_key == "VAREJO:P-1"


def test_rejects_operator_create_by_policy(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="operator", record=operator())

    decision = rejected(decide_change(item, policy, tables))

    assert decision.errors[0]["code"] == "action_not_allowed"
    assert decision.errors[0]["record_key"] == OPERATOR_ID
    assert "base_revision" in str(decision.errors[0]["message"])
    assert "base_revision" in str(decision.errors[0]["message_pt_br"])


def test_accepts_operator_edit_with_base_revision(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="operator", record=operator(), base_revision=2)

    change = accepted(decide_change(item, policy, tables))

    assert change.record_key == OPERATOR_ID


def test_rejects_store_local_field(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(shelf_location="A-3"))

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("shelf_location", "store_local_field")]
    assert decision.errors[0]["message"] == "shelf_location is kept by each store; remove it."
    assert decision.errors[0]["value"] == "A-3"
    assert decision.record_key == "P-1"


def test_store_local_and_catalog_errors_together(policy: Policy, tables: ReferenceTables) -> None:
    record = product(shelf_location="A-3", gtins=["7891000315508"])
    item = PushedChange(entity="product", record=record)

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [
        ("shelf_location", "store_local_field"),
        ("gtins.0", "gtin_check_digit"),
    ]


def test_rejects_upsert_without_record(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", key="P-1")

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("record", "required")]
    assert decision.record_key == "P-1"


def test_rejects_key_not_matching_record(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", record=product(), key="P-2")

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("key", "key_mismatch")]


def test_accepts_delete_with_key(policy: Policy, tables: ReferenceTables) -> None:
    item = PushedChange(entity="product", action="delete", key=" P-1 ", change_id="erp-7")

    change = accepted(decide_change(item, policy, tables))

    assert change.record_key == "P-1"
    assert change.action == "delete"
    assert change.fields == {}
    assert change.to_envelope().data == {"action": "delete", "fields": {}}


@pytest.mark.parametrize("key", [None, "", "   "])
def test_rejects_delete_without_key(
    policy: Policy, tables: ReferenceTables, key: str | None
) -> None:
    item = PushedChange(entity="product", action="delete", key=key)

    decision = rejected(decide_change(item, policy, tables))

    assert rules_of(decision) == [("key", "required")]


def test_rejects_record_without_key_fields(policy: Policy, tables: ReferenceTables) -> None:
    record: dict[str, Any] = product()
    del record["code"]
    item = PushedChange(entity="product", record=record)

    decision = rejected(decide_change(item, policy, tables))

    assert decision.record_key is None
    assert ("code", "required") in rules_of(decision)


@pytest.mark.parametrize(
    ("status_code", "outcome"),
    [
        (200, DeliveryOutcome.DELIVERED),
        (204, DeliveryOutcome.DELIVERED),
        (301, DeliveryOutcome.FAILED),
        (400, DeliveryOutcome.FAILED),
        (401, DeliveryOutcome.FAILED),
        (404, DeliveryOutcome.FAILED),
        (422, DeliveryOutcome.FAILED),
        (408, DeliveryOutcome.RETRY),
        (429, DeliveryOutcome.RETRY),
        (500, DeliveryOutcome.RETRY),
        (503, DeliveryOutcome.RETRY),
    ],
)
def test_delivery_outcome_of_status(status_code: int, outcome: DeliveryOutcome) -> None:
    assert delivery_outcome(status_code) is outcome


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (500, 60.0)]
)
def test_backoff_doubles_up_to_cap(attempts: int, seconds: float) -> None:
    settings = GatewaySettings(delivery_backoff_seconds=0.5)

    assert settings.backoff_seconds(attempts) == seconds


def test_settings_reject_callback_url_without_scheme() -> None:
    with pytest.raises(ValueError, match="LOJASYNC_ERP_CALLBACK_URL"):
        GatewaySettings(erp_callback_url="127.0.0.1:8009/erp/changes")


def test_settings_keep_token_out_of_repr() -> None:
    settings = GatewaySettings(erp_callback_token="s3cret-token")

    assert "s3cret-token" not in repr(settings)
