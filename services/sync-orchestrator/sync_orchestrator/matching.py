"""Match a store's legacy records to the ERP's by natural key, and find what the policy decides.

Pure functions: no database, no HTTP. A natural key is a field that names the same real
thing in both databases (`EntitySpec.natural_keys`): a product's GTINs, a customer's CPF
or CNPJ, a reference table's code. A legacy record whose natural keys point at one ERP
record, which no other legacy record claims, is matched to it; one that points at several,
or at a record another legacy record also claims, is a conflict a person resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lojasync.catalog import ENTITIES, RecordInvalid
from lojasync.policy import Owner, Policy

Validator = Callable[[str, Mapping[str, object]], dict[str, Any]]


class Category(StrEnum):
    ONLY_STORE = "only_store"
    EQUAL = "equal"
    DIFFERENT = "different"
    CONFLICT = "conflict"
    INVALID = "invalid"


class Decision(StrEnum):
    ACCEPT_ERP = "accept_erp"
    ACCEPT_STORE = "accept_store"
    MERGE = "merge"


@dataclass
class MatchItem:
    """One legacy record and what onboarding found for it."""

    entity: str
    store_key: str
    category: Category
    store_record: dict[str, Any] | None
    erp_key: str | None = None
    candidates: list[str] = field(default_factory=list)
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    allowed: list[Decision] = field(default_factory=list)
    auto_decision: Decision | None = None


@dataclass
class EntityMatch:
    items: list[MatchItem]
    only_erp: list[str]


def natural_values(entity: str, record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return the (field, value) pairs of a record's natural keys; a list field gives one
    pair per element (each GTIN of a product)."""
    pairs: list[tuple[str, str]] = []
    for name in ENTITIES[entity].natural_keys:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            pairs.extend((name, str(element)) for element in value)
        else:
            pairs.append((name, str(value)))
    # Entities with several natural-key fields (price: table and product) match on all.
    if len(ENTITIES[entity].natural_keys) > 1 and not any(
        isinstance(record.get(name), list) for name in ENTITIES[entity].natural_keys
    ):
        return [("|".join(n for n, _ in pairs), "|".join(v for _, v in pairs))] if pairs else []
    return pairs


def differing_fields(
    entity: str, erp: Mapping[str, Any], store: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Fields whose values differ, with both values; the record's key fields are left out,
    since onboarding maps the store's key to the ERP's."""
    key_fields = set(ENTITIES[entity].key_fields)
    names = (set(erp) | set(store)) - key_fields
    return {
        name: {"erp": erp.get(name), "store": store.get(name)}
        for name in sorted(names)
        if erp.get(name) != store.get(name)
    }


def _with_key(entity: str, store_key: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a single key field the legacy record left out with the store's own key."""
    key_fields = ENTITIES[entity].key_fields
    filled = dict(fields)
    if len(key_fields) == 1 and key_fields[0] not in filled:
        filled[key_fields[0]] = store_key
    return filled


def _policy_decision(policy: Policy, item: MatchItem) -> tuple[list[Decision], Decision | None]:
    """Return the decisions a person may take on an item, and the one the policy takes."""
    owner = policy.for_entity(item.entity).owner
    if item.category is Category.EQUAL:
        return [Decision.ACCEPT_ERP], Decision.ACCEPT_ERP
    if item.category in (Category.CONFLICT, Category.INVALID):
        return [Decision.ACCEPT_ERP], None
    if owner is Owner.ERP:
        if item.category is Category.DIFFERENT:
            return [Decision.ACCEPT_ERP], Decision.ACCEPT_ERP
        # The ERP owns the entity and never had this record; the store may not create it.
        return [Decision.ACCEPT_ERP], None
    if owner is Owner.STORE:
        return [Decision.ACCEPT_ERP, Decision.ACCEPT_STORE], Decision.ACCEPT_STORE
    if item.category is Category.ONLY_STORE:
        return [Decision.ACCEPT_ERP, Decision.ACCEPT_STORE], Decision.ACCEPT_STORE
    return [Decision.ACCEPT_ERP, Decision.ACCEPT_STORE, Decision.MERGE], None


def match_entity(
    entity: str,
    erp_records: Mapping[str, Mapping[str, Any]],
    legacy: Sequence[tuple[str, Mapping[str, Any]]],
    policy: Policy,
    validate: Validator,
) -> EntityMatch:
    """Match the legacy records of one entity to the ERP's records in the store's scope."""
    index: dict[tuple[str, str], set[str]] = {}
    for erp_key, record in erp_records.items():
        for pair in natural_values(entity, record):
            index.setdefault(pair, set()).add(erp_key)

    items: list[MatchItem] = []
    claims: dict[str, list[MatchItem]] = {}
    for store_key, fields in legacy:
        try:
            record = validate(entity, _with_key(entity, store_key, fields))
        except RecordInvalid as exc:
            items.append(
                MatchItem(
                    entity,
                    store_key,
                    Category.INVALID,
                    dict(fields),
                    errors=[error.as_dict() for error in exc.errors],
                )
            )
            continue
        shared, _ = policy.split_store_local(entity, record)
        found: set[str] = set()
        for pair in natural_values(entity, shared):
            found |= index.get(pair, set())
        item = MatchItem(entity, store_key, Category.ONLY_STORE, dict(shared))
        if len(found) > 1:
            item.category = Category.CONFLICT
            item.candidates = sorted(found)
        elif found:
            erp_key = next(iter(found))
            item.erp_key = erp_key
            claims.setdefault(erp_key, []).append(item)
        items.append(item)

    for erp_key, claimants in claims.items():
        erp_shared, _ = policy.split_store_local(entity, dict(erp_records[erp_key]))
        if len(claimants) > 1:
            for item in claimants:
                item.category = Category.CONFLICT
                item.candidates = [erp_key]
                item.erp_key = None
            continue
        item = claimants[0]
        assert item.store_record is not None
        item.differences = differing_fields(entity, erp_shared, item.store_record)
        item.category = Category.DIFFERENT if item.differences else Category.EQUAL

    for item in items:
        item.allowed, item.auto_decision = _policy_decision(policy, item)

    matched = {item.erp_key for item in items if item.erp_key is not None}
    claimed = matched | {key for item in items for key in item.candidates}
    only_erp = sorted(key for key in erp_records if key not in claimed)
    return EntityMatch(items, only_erp)
