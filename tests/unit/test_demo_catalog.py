"""Tests of the demo catalog generator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lojasync.catalog import RecordInvalid, entity_spec, record_key, validate_record
from lojasync.reference import ReferenceTables, load_reference_tables
from lojasync_demo.catalog import (
    BASE_PRICE_TABLE,
    PUSH_ORDER,
    REFERENCE_ENTITIES,
    SUPPLIER_COUNT,
    Catalog,
    CatalogOptionsInvalid,
    build_catalog,
    main,
)

PRODUCTS = 2_000
STORES = ("loja-1", "loja-2", "loja-3")
GENERATED_ENTITIES = tuple(entity for entity in PUSH_ORDER if entity not in REFERENCE_ENTITIES)


@pytest.fixture(scope="module")
def tables() -> ReferenceTables:
    return load_reference_tables()


@pytest.fixture(scope="module")
def catalog(tables: ReferenceTables) -> Catalog:
    return build_catalog(tables, products=PRODUCTS, store_ids=STORES)


def _products(catalog: Catalog) -> list[dict[str, object]]:
    return catalog.records["product"]


def _gtins(product: dict[str, object]) -> list[str]:
    gtins = product["gtins"]
    assert isinstance(gtins, list)
    return [str(gtin) for gtin in gtins]


# --- Validity -----------------------------------------------------------------------------


def test_every_record_passes_validation(catalog: Catalog, tables: ReferenceTables) -> None:
    failures: list[str] = []

    for entity, record in catalog.ordered():
        try:
            validate_record(entity, record, tables)
        except RecordInvalid as exc:
            failures.append(f"{entity} {record}: {exc.message}")

    assert failures == []


def test_generated_records_are_already_normalized(
    catalog: Catalog, tables: ReferenceTables
) -> None:
    changed: list[str] = []

    for entity in GENERATED_ENTITIES:
        for record in catalog.records[entity]:
            normalized = validate_record(entity, record, tables)
            if {name: normalized[name] for name in record} != record:
                changed.append(f"{entity} {record} -> {normalized}")

    assert changed == []


def test_products_have_no_store_local_fields(catalog: Catalog) -> None:
    with_shelf_location = [p["code"] for p in _products(catalog) if "shelf_location" in p]

    assert with_shelf_location == []


def test_record_keys_are_unique_per_entity(catalog: Catalog) -> None:
    repeated: dict[str, list[str]] = {}

    for entity in PUSH_ORDER:
        keys = Counter(record_key(entity, record) for record in catalog.records[entity])
        duplicates = [key for key, count in keys.items() if count > 1]
        if duplicates:
            repeated[entity] = duplicates

    assert repeated == {}


# --- GTINs --------------------------------------------------------------------------------


def test_gtins_unique_across_products(catalog: Catalog) -> None:
    counts = Counter(gtin for product in _products(catalog) for gtin in _gtins(product))

    repeated = [gtin for gtin, count in counts.items() if count > 1]

    assert repeated == []


def test_each_product_has_one_brazilian_gtin13(catalog: Catalog) -> None:
    wrong: list[object] = []

    for product in _products(catalog):
        gtin13s = [gtin for gtin in _gtins(product) if len(gtin) == 13]
        if len(gtin13s) != 1 or not gtin13s[0].startswith(("789", "790")):
            wrong.append(product["code"])

    assert wrong == []


def test_gtin14_is_box_of_product_gtin13(catalog: Catalog) -> None:
    wrong: list[object] = []

    for product in _products(catalog):
        gtins = _gtins(product)
        gtin13 = next(gtin for gtin in gtins if len(gtin) == 13)
        for gtin14 in (gtin for gtin in gtins if len(gtin) == 14):
            if gtin14[:13] != "1" + gtin13[:12]:
                wrong.append(product["code"])

    assert wrong == []


def test_extra_gtin_shares_near_targets(catalog: Catalog) -> None:
    products = _products(catalog)

    with_gtin14 = sum(1 for p in products if any(len(g) == 14 for g in _gtins(p)))
    with_gtin8 = sum(1 for p in products if any(len(g) == 8 for g in _gtins(p)))

    assert 0.03 <= with_gtin14 / PRODUCTS <= 0.07
    assert 0.01 <= with_gtin8 / PRODUCTS <= 0.03


# --- Fiscal codes -------------------------------------------------------------------------


def test_cest_covers_product_ncm(catalog: Catalog, tables: ReferenceTables) -> None:
    mismatched: list[str] = []

    for product in _products(catalog):
        cest = product.get("cest")
        if cest is None:
            continue
        prefixes = tables.cest[str(cest)].ncm_prefixes
        if prefixes and not str(product["ncm"]).startswith(prefixes):
            mismatched.append(f"{product['code']}: NCM {product['ncm']}, CEST {cest}")

    assert mismatched == []


def test_about_forty_percent_have_cest(catalog: Catalog) -> None:
    with_cest = sum(1 for product in _products(catalog) if "cest" in product)

    assert 0.35 <= with_cest / PRODUCTS <= 0.45


def test_product_ncms_in_table(catalog: Catalog, tables: ReferenceTables) -> None:
    unknown = [p["ncm"] for p in _products(catalog) if p["ncm"] not in tables.ncm]

    assert unknown == []


def test_product_units_exist(catalog: Catalog) -> None:
    units = {record["code"] for record in catalog.records["unit"]}

    missing = {product["unit"] for product in _products(catalog)} - units

    assert missing == set()


def test_fractional_units(catalog: Catalog) -> None:
    fractional = {r["code"] for r in catalog.records["unit"] if r["fractional"] is True}

    assert fractional == {"KG", "LT", "M", "G", "ML"}


def test_payment_method_tpag_kinds(catalog: Catalog) -> None:
    kinds = {record["code"]: record["kind"] for record in catalog.records["payment_method"]}

    assert kinds == {
        "DINHEIRO": "01",
        "CREDITO": "03",
        "DEBITO": "04",
        "PIX": "17",
        "VALE_ALIM": "10",
        "VALE_REF": "11",
        "CREDIARIO": "05",
    }


def test_tax_rules_use_table_cfops(catalog: Catalog, tables: ReferenceTables) -> None:
    cfops = {str(record["cfop"]) for record in catalog.records["tax_rule"]}

    assert cfops <= set(tables.cfop)
    assert {"5102", "5405"} <= cfops


def test_suppliers_unique_with_alphanumeric_cnpjs(catalog: Catalog) -> None:
    cnpjs = [str(record["cnpj"]) for record in catalog.records["supplier"]]

    alphanumeric = [cnpj for cnpj in cnpjs if not cnpj.isdigit()]

    assert len(set(cnpjs)) == SUPPLIER_COUNT
    assert len(alphanumeric) == 8


# --- Prices -------------------------------------------------------------------------------


def test_price_keys_refer_to_products_and_tables(catalog: Catalog) -> None:
    product_codes = {record["code"] for record in _products(catalog)}
    table_codes = {record["code"] for record in catalog.records["price_table"]}

    dangling = [
        record_key("price", price)
        for price in catalog.records["price"]
        if price["product"] not in product_codes or price["table"] not in table_codes
    ]

    assert dangling == []


def test_one_base_price_per_product(catalog: Catalog) -> None:
    base_products = [p["product"] for p in catalog.records["price"] if p["table"] == "BASE"]

    assert base_products == [product["code"] for product in _products(catalog)]


def test_store_tables_price_about_five_percent(catalog: Catalog) -> None:
    per_table = Counter(str(price["table"]) for price in catalog.records["price"])

    shares = {table: per_table[table] / PRODUCTS for table in ("LOJA-1", "LOJA-2", "LOJA-3")}

    assert all(0.03 <= share <= 0.07 for share in shares.values()), shares


def test_price_tables_name_their_stores(catalog: Catalog) -> None:
    stores = {record["code"]: record["stores"] for record in catalog.records["price_table"]}

    assert stores == {
        BASE_PRICE_TABLE: [],
        "LOJA-1": ["loja-1"],
        "LOJA-2": ["loja-2"],
        "LOJA-3": ["loja-3"],
    }


# --- Counts, order and determinism --------------------------------------------------------


def test_counts(catalog: Catalog, tables: ReferenceTables) -> None:
    counts = catalog.counts()

    assert list(counts) == list(PUSH_ORDER)
    assert counts["ncm"] == len(tables.ncm)
    assert counts["municipality"] == len(tables.municipalities)
    assert counts["supplier"] == SUPPLIER_COUNT
    assert counts["product"] == PRODUCTS
    assert counts["price_table"] == 1 + len(STORES)
    assert counts["price"] == len(catalog.records["price"])


def test_ordered_yields_every_record(catalog: Catalog) -> None:
    yielded = sum(1 for _ in catalog.ordered())

    assert yielded == sum(catalog.counts().values())


def test_ordered_puts_dependencies_first(catalog: Catalog) -> None:
    first_position: dict[str, int] = {}
    for position, (entity, _) in enumerate(catalog.ordered()):
        first_position.setdefault(entity, position)

    late = [
        f"{dependency} after {entity}"
        for entity in first_position
        for dependency in entity_spec(entity).dependencies
        if dependency in first_position and first_position[dependency] > first_position[entity]
    ]

    assert late == []


def test_same_seed_same_catalog(catalog: Catalog, tables: ReferenceTables) -> None:
    again = build_catalog(tables, products=PRODUCTS, store_ids=STORES)

    assert again.records == catalog.records


def test_other_seed_other_catalog(catalog: Catalog, tables: ReferenceTables) -> None:
    other = build_catalog(tables, products=PRODUCTS, seed=7, store_ids=STORES)

    assert other.records["product"] != catalog.records["product"]
    assert other.records["supplier"] != catalog.records["supplier"]


def test_smaller_catalog_is_prefix(catalog: Catalog, tables: ReferenceTables) -> None:
    smaller = build_catalog(tables, products=300, store_ids=STORES)
    smaller_codes = {product["code"] for product in smaller.records["product"]}

    larger_prices = [p for p in catalog.records["price"] if p["product"] in smaller_codes]

    assert smaller.records["product"] == catalog.records["product"][:300]
    assert smaller.records["price"] == larger_prices


def test_ten_thousand_products_built(tables: ReferenceTables) -> None:
    built = build_catalog(tables, products=10_000)

    assert built.counts()["product"] == 10_000
    assert len({product["code"] for product in built.records["product"]}) == 10_000


# --- Options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "store_ids",
    [("Loja-1",), ("loja-1", "loja-1"), ("base",), ("loja-de-nome-muito-longo-x",), ("",)],
    ids=["upper-case", "repeated", "base table name", "too long for table code", "empty"],
)
def test_rejects_unusable_store_ids(tables: ReferenceTables, store_ids: tuple[str, ...]) -> None:
    with pytest.raises(CatalogOptionsInvalid):
        build_catalog(tables, products=1, store_ids=store_ids)


def test_rejects_negative_products(tables: ReferenceTables) -> None:
    with pytest.raises(CatalogOptionsInvalid):
        build_catalog(tables, products=-1)


def test_zero_products_has_no_prices(tables: ReferenceTables) -> None:
    empty = build_catalog(tables, products=0)

    assert empty.counts()["product"] == 0
    assert empty.counts()["price"] == 0


# --- Command line -------------------------------------------------------------------------


def test_cli_writes_one_line_per_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tables: ReferenceTables
) -> None:
    out = tmp_path / "catalog.jsonl"

    status = main(["--products", "25", "--out", str(out), "--lang", "en"])

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    printed_counts = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    expected = build_catalog(tables, products=25)
    assert status == 0
    assert [(line["entity"], line["record"]) for line in lines] == list(expected.ordered())
    assert ["product", "25"] in printed_counts


def test_cli_reports_bad_store_in_portuguese(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "catalog.jsonl"

    status = main(["--products", "1", "--out", str(out), "--store", "LOJA", "--lang", "pt-BR"])

    assert status == 2
    assert "id de loja 'LOJA' é inválido" in capsys.readouterr().err
    assert not out.exists()
