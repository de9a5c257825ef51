"""Onboarding's matching by natural key and the decisions the policy takes; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stdnum import ean

from lojasync.batch import BatchItem
from lojasync.catalog import validate_record
from lojasync.policy import load_policy
from lojasync.reference import load_reference_tables
from store_registry.bulk import StoredVersion, applies
from sync_orchestrator.matching import Category, Decision, match_entity

POLICY = load_policy()
TABLES = load_reference_tables()
CPF = "52998224725"


def validate(entity: str, data: Mapping[str, object]) -> dict[str, Any]:
    return validate_record(entity, data, TABLES)


def gtin(number: int) -> str:
    body = f"789{number:09d}"
    return body + ean.calc_check_digit(body)


def product(code: str, gtins: list[str], description: str = "ARROZ") -> dict[str, Any]:
    return validate(
        "product",
        {"code": code, "description": description, "gtins": gtins, "ncm": "22030000", "unit": "UN"},
    )


ERP_PRODUCTS = {
    "P1": product("P1", [gtin(1)]),
    "P2": product("P2", [gtin(2)]),
    "P3": product("P3", [gtin(3)]),
    "P4": product("P4", [gtin(4)]),
}


def test_products_match_by_gtin() -> None:
    legacy = [
        ("L1", product("L1", [gtin(1)])),
        ("L2", product("L2", [gtin(2)], "FEIJAO")),
        ("L9", product("L9", [gtin(9)])),
    ]

    match = match_entity("product", ERP_PRODUCTS, legacy, POLICY, validate)
    by_key = {item.store_key: item for item in match.items}

    assert by_key["L1"].category is Category.EQUAL
    assert by_key["L1"].erp_key == "P1"
    assert by_key["L2"].category is Category.DIFFERENT
    assert by_key["L2"].differences == {"description": {"erp": "ARROZ", "store": "FEIJAO"}}
    assert by_key["L2"].auto_decision is Decision.ACCEPT_ERP
    assert by_key["L9"].category is Category.ONLY_STORE
    assert by_key["L9"].auto_decision is None
    assert match.only_erp == ["P3", "P4"]


def test_gtin_on_two_products_conflicts() -> None:
    legacy = [("L34", product("L34", [gtin(3), gtin(4)]))]

    match = match_entity("product", ERP_PRODUCTS, legacy, POLICY, validate)

    assert match.items[0].category is Category.CONFLICT
    assert match.items[0].candidates == ["P3", "P4"]
    assert match.items[0].allowed == [Decision.ACCEPT_ERP]
    assert match.only_erp == ["P1", "P2"]


def test_two_store_records_on_one_erp_record_conflict() -> None:
    legacy = [("LA", product("LA", [gtin(1)])), ("LB", product("LB", [gtin(1)]))]

    match = match_entity("product", ERP_PRODUCTS, legacy, POLICY, validate)

    assert [item.category for item in match.items] == [Category.CONFLICT, Category.CONFLICT]
    assert [item.candidates for item in match.items] == [["P1"], ["P1"]]


def test_invalid_legacy_record_listed() -> None:
    legacy = [("LX", {"code": "LX", "description": "X", "gtins": ["7890000000001"]})]

    match = match_entity("product", ERP_PRODUCTS, legacy, POLICY, validate)

    assert match.items[0].category is Category.INVALID
    assert match.items[0].errors


def test_customer_matches_by_document() -> None:
    erp_id = "8a3c1f0e-6a55-4c53-9b0f-0c8a8a0b6f11"
    store_id = "f1d2c3b4-1111-4222-8333-944455566677"
    erp = {erp_id: validate("customer", {"id": erp_id, "document": CPF, "name": "Maria"})}
    legacy = [(store_id, {"document": "529.982.247-25", "name": "Maria", "email": "m@x.com.br"})]

    match = match_entity("customer", erp, legacy, POLICY, validate)
    item = match.items[0]

    assert item.category is Category.DIFFERENT
    assert item.erp_key == erp_id
    assert item.differences == {"email": {"erp": None, "store": "m@x.com.br"}}
    assert item.auto_decision is None
    assert item.allowed == [Decision.ACCEPT_ERP, Decision.ACCEPT_STORE, Decision.MERGE]


def test_store_only_customer_kept_by_policy() -> None:
    store_id = "f1d2c3b4-1111-4222-8333-944455566677"
    legacy = [(store_id, {"document": CPF, "name": "Maria"})]

    match = match_entity("customer", {}, legacy, POLICY, validate)

    assert match.items[0].category is Category.ONLY_STORE
    assert match.items[0].auto_decision is Decision.ACCEPT_STORE
    assert match.items[0].store_record is not None
    assert match.items[0].store_record["id"] == store_id


def item(revision: int, expected: int | None = None) -> BatchItem:
    return BatchItem("unit", "UN", revision, record={"code": "UN"}, expected_revision=expected)


def test_bulk_rule_newer_revision_applies() -> None:
    stored = StoredVersion(revision=3, content_hash="h", pending_event_id=None)

    assert applies(item(4), stored, repair=False)
    assert not applies(item(3), stored, repair=False)
    assert not applies(item(2), stored, repair=False)


def test_bulk_rule_repair_needs_seen_revision() -> None:
    stored = StoredVersion(revision=3, content_hash="h", pending_event_id=None)

    assert applies(item(3, expected=3), stored, repair=True)
    assert applies(item(2, expected=3), stored, repair=True)
    assert not applies(item(3, expected=2), stored, repair=True)
    assert not applies(item(3, expected=3), stored, repair=False)


def test_bulk_rule_repair_of_missing_row() -> None:
    tombstone = StoredVersion(revision=3, content_hash=None, pending_event_id=None)
    confirmed = StoredVersion(revision=3, content_hash="h", pending_event_id=None)

    assert applies(item(3), tombstone, repair=True)
    assert not applies(item(2), tombstone, repair=True)
    assert not applies(item(3), confirmed, repair=True)
