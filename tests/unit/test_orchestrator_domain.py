"""The orchestrator's decisions under the bundled policy, without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from lojasync.catalog import validate_record
from lojasync.policy import load_policy
from lojasync.reference import load_reference_tables
from sync_orchestrator.domain import (
    Accepted,
    Change,
    CurrentRecord,
    MissingScopeParent,
    Rejected,
    decide,
    scope_of,
)

POLICY = load_policy()
TABLES = load_reference_tables()
CUSTOMER_ID = "2f1c9a4e-4b7e-4f43-9a51-0d3e8f6b2c11"
OPERATOR_ID = "8c0e7a52-2b57-4f0e-8d9a-5a4c1b7e3f20"


def validate(entity: str, data: Mapping[str, object]) -> dict[str, Any]:
    return validate_record(entity, data, TABLES)


def change(
    entity: str,
    key: str,
    origin: str,
    fields: dict[str, Any],
    *,
    base: int | None = None,
    deleting: bool = False,
) -> Change:
    return Change(
        event_id="e1",
        entity=entity,
        record_key=key,
        origin=origin,
        action=None,
        deleting=deleting,
        fields=fields,
        base_revision=base,
    )


def customer(**overrides: Any) -> dict[str, Any]:
    record = {
        "id": CUSTOMER_ID,
        "document": "52998224725",
        "name": "Maria da Silva",
        "email": "maria@example.com.br",
        "phone": None,
        "municipality": None,
    }
    return {**record, **overrides}


def product(**overrides: Any) -> dict[str, Any]:
    record = {
        "code": "P1",
        "description": "CERVEJA PILSEN 350ML",
        "gtins": ["7891000315507"],
        "ncm": "22030000",
        "cest": None,
        "unit": "UN",
        "brand": None,
        "shelf_location": None,
        "active": True,
    }
    return {**record, **overrides}


def current(data: dict[str, Any], revision: int = 1, **kwargs: Any) -> CurrentRecord:
    return CurrentRecord(
        revision=revision,
        data=validate(kwargs.pop("entity", "customer"), data),
        deleted=False,
        stores=None,
        owner_store=kwargs.pop("owner_store", None),
        field_origins=kwargs.pop("field_origins", {}),
        erp_base=kwargs.pop("erp_base", None),
    )


def test_erp_creates_product() -> None:
    outcome = decide(
        POLICY.for_entity("product"),
        change("product", "P1", "erp", product()),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Accepted)
    assert outcome.data["description"] == "CERVEJA PILSEN 350ML"


def test_store_edit_of_product_rejected() -> None:
    state = current(product(), entity="product")
    edit = change("product", "P1", "store:loja-1", {"description": "OUTRO"}, base=1)

    outcome = decide(POLICY.for_entity("product"), edit, state, None, validate)

    assert isinstance(outcome, Rejected)
    assert outcome.code == "erp_owned"
    assert outcome.field == "description"


def test_store_local_field_never_reaches_central_state() -> None:
    edit = change("product", "P1", "erp", product(shelf_location="A1"))

    outcome = decide(POLICY.for_entity("product"), edit, None, None, validate)

    assert isinstance(outcome, Accepted)
    assert outcome.data["shelf_location"] is None


def test_store_creates_customer() -> None:
    outcome = decide(
        POLICY.for_entity("customer"),
        change("customer", CUSTOMER_ID, "store:loja-1", customer(), base=0),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Accepted)
    assert outcome.field_origins["document"] == "store:loja-1"


def test_store_cannot_delete_customer() -> None:
    state = current(customer())

    outcome = decide(
        POLICY.for_entity("customer"),
        change("customer", CUSTOMER_ID, "store:loja-1", {}, base=1, deleting=True),
        state,
        None,
        validate,
    )

    assert isinstance(outcome, Rejected)
    assert outcome.code == "action_not_allowed"


def test_document_immutable_after_accept() -> None:
    state = current(customer())
    edit = change("customer", CUSTOMER_ID, "store:loja-2", {"document": "11144477735"}, base=1)

    outcome = decide(POLICY.for_entity("customer"), edit, state, None, validate)

    assert isinstance(outcome, Rejected)
    assert outcome.code == "immutable_field"
    assert outcome.field == "document"


def test_same_field_conflict_won_by_erp() -> None:
    base = customer()
    state = current(customer(name="Maria S. Souza"), revision=2, field_origins={"name": "erp"})
    edit = change(
        "customer",
        CUSTOMER_ID,
        "store:loja-1",
        {"name": "Maria Silva", "email": "m@loja.com.br"},
        base=1,
    )

    outcome = decide(
        POLICY.for_entity("customer"), edit, state, validate("customer", base), validate
    )

    assert isinstance(outcome, Accepted)
    assert outcome.data["name"] == "Maria S. Souza"
    assert outcome.data["email"] == "m@loja.com.br"
    assert outcome.overridden == ("name",)


def test_same_field_between_stores_newest_wins() -> None:
    base = customer()
    state = current(
        customer(name="Nome da Loja 2"), revision=2, field_origins={"name": "store:loja-2"}
    )
    edit = change("customer", CUSTOMER_ID, "store:loja-1", {"name": "Nome da Loja 1"}, base=1)

    outcome = decide(
        POLICY.for_entity("customer"), edit, state, validate("customer", base), validate
    )

    assert isinstance(outcome, Accepted)
    assert outcome.data["name"] == "Nome da Loja 1"


def test_full_erp_push_keeps_store_edit_of_other_field() -> None:
    erp_view = validate("customer", customer())
    state = current(
        customer(email="novo@loja.com.br"),
        revision=2,
        field_origins={"email": "store:loja-1"},
        erp_base=erp_view,
    )
    push = change("customer", CUSTOMER_ID, "erp", customer(phone="11987654321"))

    outcome = decide(POLICY.for_entity("customer"), push, state, None, validate)

    assert isinstance(outcome, Accepted)
    assert outcome.data["phone"] == "11987654321"
    assert outcome.data["email"] == "novo@loja.com.br"


def test_unchanged_erp_push_is_flagged() -> None:
    erp_view = validate("customer", customer())
    state = current(customer(), erp_base=erp_view)

    outcome = decide(
        POLICY.for_entity("customer"),
        change("customer", CUSTOMER_ID, "erp", customer()),
        state,
        None,
        validate,
    )

    assert isinstance(outcome, Accepted)
    assert outcome.unchanged


def test_base_revision_from_future_rejected() -> None:
    state = current(customer())
    edit = change("customer", CUSTOMER_ID, "store:loja-1", {"name": "X Y"}, base=5)

    outcome = decide(POLICY.for_entity("customer"), edit, state, None, validate)

    assert isinstance(outcome, Rejected)
    assert outcome.code == "invalid_base_revision"


def test_invalid_merged_record_rejected_with_field_errors() -> None:
    state = current(customer())
    edit = change("customer", CUSTOMER_ID, "store:loja-1", {"email": "not-an-email"}, base=1)

    outcome = decide(POLICY.for_entity("customer"), edit, state, None, validate)

    assert isinstance(outcome, Rejected)
    assert outcome.code == "record_invalid"
    assert outcome.errors[0]["field"] == "email"


def test_delete_of_missing_record_rejected() -> None:
    outcome = decide(
        POLICY.for_entity("product"),
        change("product", "P9", "erp", {}, deleting=True),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Rejected)
    assert outcome.code == "record_not_found"


def operator(**overrides: Any) -> dict[str, Any]:
    record = {
        "id": OPERATOR_ID,
        "store_id": "loja-1",
        "code": "101",
        "name": "Ana Caixa",
        "role": "cashier",
        "active": True,
    }
    return {**record, **overrides}


def test_operator_created_by_its_store() -> None:
    outcome = decide(
        POLICY.for_entity("operator"),
        change("operator", OPERATOR_ID, "store:loja-1", operator(), base=0),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Accepted)
    assert outcome.owner_store == "loja-1"


def test_operator_for_other_store_rejected() -> None:
    outcome = decide(
        POLICY.for_entity("operator"),
        change("operator", OPERATOR_ID, "store:loja-2", operator(), base=0),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Rejected)
    assert outcome.code == "not_owner_store"


def test_operator_edit_by_other_store_rejected() -> None:
    state = current(operator(), entity="operator", owner_store="loja-1")
    edit = change("operator", OPERATOR_ID, "store:loja-2", {"name": "Outra Pessoa"}, base=1)

    outcome = decide(POLICY.for_entity("operator"), edit, state, None, validate)

    assert isinstance(outcome, Rejected)
    assert outcome.code == "not_owner_store"


def test_erp_cannot_create_operator() -> None:
    outcome = decide(
        POLICY.for_entity("operator"),
        change("operator", OPERATOR_ID, "erp", operator()),
        None,
        None,
        validate,
    )

    assert isinstance(outcome, Rejected)
    assert outcome.code == "action_not_allowed"


def test_scope_all_origin_and_fields() -> None:
    assert scope_of(POLICY.for_entity("product"), {}, None, {}) is None
    assert scope_of(POLICY.for_entity("operator"), {}, "loja-1", {}) == ["loja-1"]
    assert scope_of(POLICY.for_entity("price_table"), {"stores": []}, None, {}) is None
    assert scope_of(
        POLICY.for_entity("price_table"), {"stores": ["loja-3", "loja-1"]}, None, {}
    ) == [
        "loja-1",
        "loja-3",
    ]


def test_price_scope_follows_its_table() -> None:
    rules = POLICY.for_entity("price")

    assert scope_of(rules, {"table": "LOJA-3"}, None, {"LOJA-3": ["loja-3"]}) == ["loja-3"]
    assert scope_of(rules, {"table": "BASE"}, None, {"BASE": None}) is None
    with pytest.raises(MissingScopeParent):
        scope_of(rules, {"table": "NOPE"}, None, {})


def test_erp_push_with_stale_base_merges_by_field() -> None:
    base = validate("customer", customer())
    state = current(
        customer(phone="11987654321"), revision=2, field_origins={"phone": "store:loja-2"}
    )
    push = change("customer", CUSTOMER_ID, "erp", customer(name="Maria Souza"), base=1)

    outcome = decide(POLICY.for_entity("customer"), push, state, base, validate)

    assert isinstance(outcome, Accepted)
    assert outcome.data["name"] == "Maria Souza"
    assert outcome.data["phone"] == "11987654321"
