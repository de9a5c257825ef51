"""The entity catalog: validation of whole records, error mapping and record keys."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from stdnum import ean

from lojasync.catalog import (
    ENTITIES,
    Product,
    RecordInvalid,
    UnknownEntity,
    entity_spec,
    record_key,
    validate_keyed_record,
    validate_record,
)
from lojasync.errors import LojasyncError
from lojasync.reference import ReferenceTables, load_reference_tables
from lojasync.validation import FieldError

CUSTOMER_ID = "3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f"
OPERATOR_ID = "9b1d7c2a-0e4f-4a6b-8c3d-5e6f7a8b9c0d"

VALID_RECORDS: dict[str, dict[str, object]] = {
    "ncm": {"code": "22030000", "description": "Cervejas de malte."},
    "cest": {
        "code": "0302100",
        "segment": "03",
        "description": "Cerveja em garrafa de vidro retornável",
        "ncm_prefixes": ["22030000"],
    },
    "cfop": {
        "code": "5102",
        "description": "Venda de mercadoria adquirida ou recebida de terceiros",
        "direction": "out",
    },
    "cst": {
        "tax": "icms",
        "code": "00",
        "description": "Tributada integralmente",
        "applies_to": "all",
    },
    "municipality": {"ibge_code": "3550308", "name": "São Paulo", "uf": "SP"},
    "unit": {"code": "KG", "description": "Quilograma", "fractional": True},
    "supplier": {
        "cnpj": "11.222.333/0001-81",
        "legal_name": "Cervejaria Exemplo Ltda",
        "trade_name": "Exemplo",
        "municipality": "3550308",
        "email": "vendas@example.com.br",
    },
    "payment_method": {"code": "PIX", "description": "PIX", "kind": "17"},
    "product": {
        "code": "CERV-600",
        "description": "Cerveja pilsen garrafa 600 ml",
        "gtins": ["7891000315507", "78935761"],
        "ncm": "2203.00.00",
        "cest": "03.021.00",
        "unit": "un",
        "brand": "Exemplo",
        "shelf_location": "A3-P2",
    },
    "tax_rule": {
        "code": "VENDA-ST",
        "description": "Venda com ICMS cobrado anteriormente por ST",
        "cfop": "5.405",
        "icms_cst": "60",
        "icms_rate": "0",
        "pis_cst": "01",
        "cofins_cst": "01",
        "ncm_prefix": "2203",
    },
    "price_table": {"code": "VAREJO", "description": "Varejo", "stores": ["loja-01", "loja-02"]},
    "price": {"table": "VAREJO", "product": "CERV-600", "price": "12.9", "promotional_price": 11},
    "customer": {
        "id": CUSTOMER_ID.upper(),
        "document": "123.456.789-09",
        "name": "Maria da Silva",
        "email": "maria@example.com",
        "phone": "(11) 98765-4321",
        "municipality": "3550308",
    },
    "operator": {
        "id": OPERATOR_ID,
        "store_id": "loja-01",
        "code": "0042",
        "name": "João Souza",
        "role": "cashier",
    },
}

EXPECTED_KEYS = {
    "ncm": "22030000",
    "cest": "0302100",
    "cfop": "5102",
    "cst": "icms:00",
    "municipality": "3550308",
    "unit": "KG",
    "supplier": "11222333000181",
    "payment_method": "PIX",
    "product": "CERV-600",
    "tax_rule": "VENDA-ST",
    "price_table": "VAREJO",
    "price": "VAREJO:CERV-600",
    "customer": CUSTOMER_ID,
    "operator": OPERATOR_ID,
}


@pytest.fixture(scope="module")
def tables() -> ReferenceTables:
    return load_reference_tables()


def with_fields(entity: str, **changes: object) -> dict[str, object]:
    """Return the valid record of `entity` with fields changed (None values remove them)."""
    record = dict(VALID_RECORDS[entity])
    for name, value in changes.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    return record


def errors_of(entity: str, data: Mapping[str, object], tables: ReferenceTables) -> list[FieldError]:
    with pytest.raises(RecordInvalid) as raised:
        validate_record(entity, data, tables)
    return raised.value.errors


def only_error(entity: str, data: Mapping[str, object], tables: ReferenceTables) -> FieldError:
    errors = errors_of(entity, data, tables)
    assert len(errors) == 1, errors
    return errors[0]


# --- Catalog structure --------------------------------------------------------------------


def test_catalog_has_every_entity() -> None:
    assert set(ENTITIES) == set(VALID_RECORDS)


def test_entity_spec_returns_spec() -> None:
    assert entity_spec("product").model is Product


def test_entity_spec_rejects_unknown_name() -> None:
    with pytest.raises(UnknownEntity) as raised:
        entity_spec("produto")

    assert isinstance(raised.value, LojasyncError)
    assert "produto" in raised.value.message
    assert "product" in raised.value.message
    assert raised.value.as_dict()["code"] == "unknown_entity"


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_spec_fields_exist_in_model(entity: str) -> None:
    spec = ENTITIES[entity]
    fields = set(spec.model.model_fields)

    assert set(spec.key_fields) <= fields
    assert set(spec.natural_keys) <= fields
    assert set(spec.dependencies) <= set(ENTITIES)


def test_dependencies_have_no_cycle() -> None:
    ordered: list[str] = []
    pending = dict(ENTITIES)

    while pending:
        ready = [name for name, spec in pending.items() if set(spec.dependencies) <= set(ordered)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        ordered.extend(ready)
        for name in ready:
            del pending[name]

    assert ordered.index("product") > ordered.index("ncm")
    assert ordered.index("price") > ordered.index("price_table")


# --- Valid records and keys ---------------------------------------------------------------


@pytest.mark.parametrize("entity", sorted(VALID_RECORDS))
def test_valid_record_passes(tables: ReferenceTables, entity: str) -> None:
    record = validate_record(entity, VALID_RECORDS[entity], tables)

    assert set(record) == set(ENTITIES[entity].model.model_fields)
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize(("entity", "expected"), sorted(EXPECTED_KEYS.items()))
def test_record_key_of_entity(entity: str, expected: str) -> None:
    assert record_key(entity, VALID_RECORDS[entity]) == expected


@pytest.mark.parametrize(("entity", "expected"), sorted(EXPECTED_KEYS.items()))
def test_record_key_matches_validated_record(
    tables: ReferenceTables, entity: str, expected: str
) -> None:
    record = validate_record(entity, VALID_RECORDS[entity], tables)

    assert record_key(entity, record) == expected


@pytest.mark.parametrize(("entity", "expected"), sorted(EXPECTED_KEYS.items()))
def test_validate_keyed_record_returns_key(
    tables: ReferenceTables, entity: str, expected: str
) -> None:
    record, key = validate_keyed_record(entity, VALID_RECORDS[entity], tables)

    assert record == validate_record(entity, VALID_RECORDS[entity], tables)
    assert key == expected


def test_validate_keyed_record_normalizes_the_key_fields(tables: ReferenceTables) -> None:
    record = {**VALID_RECORDS["cst"], "tax": " ICMS "}

    assert validate_keyed_record("cst", record, tables)[1] == record_key("cst", record)
    assert record_key("cst", record).startswith("icms:")


def test_record_key_ignores_other_fields() -> None:
    assert record_key("cst", {"tax": " ICMS ", "code": "60", "description": 5}) == "icms:60"


def test_record_key_rejects_missing_key_field() -> None:
    with pytest.raises(RecordInvalid) as raised:
        record_key("price", {"table": "VAREJO"})

    assert raised.value.record_key is None
    assert [(error.field, error.rule) for error in raised.value.errors] == [("product", "required")]


def test_record_key_rejects_unknown_entity() -> None:
    with pytest.raises(UnknownEntity):
        record_key("produto", {"code": "X"})


def test_product_is_normalized(tables: ReferenceTables) -> None:
    record = validate_record("product", VALID_RECORDS["product"], tables)

    assert record["ncm"] == "22030000"
    assert record["cest"] == "0302100"
    assert record["unit"] == "UN"
    assert record["gtins"] == ["7891000315507", "78935761"]
    assert record["active"] is True


def test_money_comes_out_as_string(tables: ReferenceTables) -> None:
    record = validate_record("price", VALID_RECORDS["price"], tables)

    assert record["price"] == "12.90"
    assert record["promotional_price"] == "11.00"


def test_documents_are_normalized(tables: ReferenceTables) -> None:
    customer = validate_record("customer", VALID_RECORDS["customer"], tables)
    supplier = validate_record("supplier", VALID_RECORDS["supplier"], tables)

    assert customer["document"] == "12345678909"
    assert customer["id"] == CUSTOMER_ID
    assert customer["phone"] == "11987654321"
    assert supplier["cnpj"] == "11222333000181"


def test_alphanumeric_cnpj_supplier_passes(tables: ReferenceTables) -> None:
    data = with_fields("supplier", cnpj="12.abc.345/01de-35")

    assert validate_record("supplier", data, tables)["cnpj"] == "12ABC34501DE35"


def test_optional_fields_default_to_none(tables: ReferenceTables) -> None:
    data = with_fields("product", cest=None, brand=None, shelf_location=None)

    record = validate_record("product", data, tables)

    assert record["cest"] is None
    assert record["brand"] is None
    assert record["shelf_location"] is None


def test_blank_optional_field_becomes_none(tables: ReferenceTables) -> None:
    data = with_fields("supplier", trade_name="  ", email="")

    record = validate_record("supplier", data, tables)

    assert record["trade_name"] is None
    assert record["email"] is None


def test_payment_method_code_accepts_underscore(tables: ReferenceTables) -> None:
    data = with_fields("payment_method", code="VALE_REF", kind="11")

    assert validate_record("payment_method", data, tables)["code"] == "VALE_REF"


def test_boolean_defaults_apply(tables: ReferenceTables) -> None:
    unit = validate_record("unit", with_fields("unit", fractional=None), tables)
    operator = validate_record("operator", VALID_RECORDS["operator"], tables)

    assert unit["fractional"] is False
    assert operator["active"] is True


def test_price_table_with_no_stores_passes(tables: ReferenceTables) -> None:
    record = validate_record("price_table", with_fields("price_table", stores=[]), tables)

    assert record["stores"] == []


def test_tax_rule_accepts_csosn(tables: ReferenceTables) -> None:
    data = with_fields("tax_rule", icms_cst="500")

    assert validate_record("tax_rule", data, tables)["icms_cst"] == "500"


def test_product_accepts_cest_on_restored_ncm_prefix(tables: ReferenceTables) -> None:
    data = with_fields("product", ncm="04011010", cest="1701600", gtins=[])

    assert validate_record("product", data, tables)["cest"] == "1701600"


def test_product_accepts_no_ncm_code(tables: ReferenceTables) -> None:
    data = with_fields("product", ncm="00000000", cest=None)

    assert validate_record("product", data, tables)["ncm"] == "00000000"


# --- Generic rules ------------------------------------------------------------------------


def test_unknown_field_is_rejected(tables: ReferenceTables) -> None:
    error = only_error("unit", with_fields("unit", colour="blue"), tables)

    assert error.field == "colour"
    assert error.rule == "unknown_field"
    assert "fractional" in error.message


def test_missing_field_is_required(tables: ReferenceTables) -> None:
    error = only_error("product", with_fields("product", ncm=None), tables)

    assert error.field == "ncm"
    assert error.rule == "required"


def test_missing_gtins_is_required(tables: ReferenceTables) -> None:
    error = only_error("product", with_fields("product", gtins=None), tables)

    assert error.field == "gtins"
    assert error.rule == "required"


@pytest.mark.parametrize(
    ("field", "value"), [("active", "true"), ("active", 1), ("gtins", "7891000315507")]
)
def test_wrong_json_type_is_rejected(tables: ReferenceTables, field: str, value: object) -> None:
    error = only_error("product", with_fields("product", **{field: value}), tables)

    assert error.field == field
    assert error.rule == "type"


def test_long_description_is_rejected(tables: ReferenceTables) -> None:
    error = only_error("product", with_fields("product", description="x" * 121), tables)

    assert error.field == "description"
    assert error.rule == "max_length"


def test_empty_description_is_rejected(tables: ReferenceTables) -> None:
    error = only_error("product", with_fields("product", description="   "), tables)

    assert error.field == "description"
    assert error.rule == "min_length"


def test_too_many_gtins_are_rejected(tables: ReferenceTables) -> None:
    bodies = [f"789100031{index:03d}" for index in range(21)]
    gtins = [body + ean.calc_check_digit(body) for body in bodies]

    error = only_error("product", with_fields("product", gtins=gtins), tables)

    assert error.field == "gtins"
    assert error.rule == "max_length"


def test_all_errors_are_collected(tables: ReferenceTables) -> None:
    data = with_fields(
        "product",
        code="cerv 600",
        gtins=["7891000315507", "7891000315508"],
        ncm="12345678",
        unit="",
        extra=1,
    )

    errors = errors_of("product", data, tables)

    found = {(error.field, error.rule) for error in errors}
    assert found == {
        ("code", "code_format"),
        ("gtins.1", "gtin_check_digit"),
        ("ncm", "ncm_unknown"),
        ("unit", "code_format"),
        ("extra", "unknown_field"),
    }


def test_record_invalid_names_entity_and_key(tables: ReferenceTables) -> None:
    with pytest.raises(RecordInvalid) as raised:
        validate_record("product", with_fields("product", ncm="12345678"), tables)

    detail = raised.value.as_dict()
    assert detail["code"] == "record_invalid"
    assert detail["entity"] == "product"
    assert detail["record_key"] == "CERV-600"
    assert "CERV-600" in raised.value.message
    assert "ncm_unknown" in raised.value.message_pt_br


def test_record_invalid_without_valid_key(tables: ReferenceTables) -> None:
    with pytest.raises(RecordInvalid) as raised:
        validate_record("product", with_fields("product", code="?"), tables)

    assert raised.value.record_key is None


def test_non_object_record_is_rejected(tables: ReferenceTables) -> None:
    error = only_error("product", ["not", "an", "object"], tables)  # type: ignore[arg-type]

    assert error.field == ""
    assert error.rule == "type"


def test_model_without_tables_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Product.model_validate(VALID_RECORDS["product"])


def test_validate_record_rejects_unknown_entity(tables: ReferenceTables) -> None:
    with pytest.raises(UnknownEntity):
        validate_record("produto", {}, tables)


# --- Entity rules -------------------------------------------------------------------------

# (entity, changed fields, field of the error, rule)
ENTITY_RULE_CASES: list[tuple[str, dict[str, object], str, str]] = [
    ("ncm", {"code": "2203000"}, "code", "ncm_format"),
    ("ncm", {"description": "x" * 2001}, "description", "max_length"),
    ("cest", {"code": "030210"}, "code", "cest_format"),
    ("cest", {"ncm_prefixes": ["2203", "2"]}, "ncm_prefixes.1", "ncm_prefix_format"),
    ("cfop", {"code": "4102"}, "code", "cfop_first_digit"),
    ("cfop", {"direction": "in"}, "direction", "cfop_direction"),
    ("cfop", {"code": "1102"}, "direction", "cfop_direction"),
    ("cfop", {"direction": "outbound"}, "direction", "choice"),
    ("cst", {"tax": "vat"}, "tax", "cst_tax_unknown"),
    ("cst", {"tax": "icms1"}, "tax", "cst_tax_unknown"),
    ("cst", {"code": "0"}, "code", "cst_format"),
    ("municipality", {"ibge_code": "355030"}, "ibge_code", "ibge_format"),
    ("municipality", {"uf": "XX"}, "uf", "uf_unknown"),
    ("municipality", {"uf": "RJ"}, "uf", "ibge_uf_mismatch"),
    ("unit", {"code": "UN-1"}, "code", "code_format"),
    ("unit", {"code": "UNIDADE"}, "code", "code_format"),
    ("supplier", {"cnpj": "11.222.333/0001-82"}, "cnpj", "cnpj_check_digit"),
    ("supplier", {"cnpj": "123.456.789-09"}, "cnpj", "cnpj_format"),
    ("supplier", {"legal_name": "x" * 121}, "legal_name", "max_length"),
    ("supplier", {"municipality": "3550300"}, "municipality", "ibge_unknown"),
    ("supplier", {"email": "vendas.example.com.br"}, "email", "email_format"),
    ("payment_method", {"code": "PIX-1"}, "code", "code_format"),
    ("payment_method", {"kind": "14"}, "kind", "payment_kind"),
    ("payment_method", {"kind": 17}, "kind", "payment_kind"),
    ("product", {"code": "CERV_600"}, "code", "code_format"),
    ("product", {"code": "X" * 21}, "code", "code_format"),
    ("product", {"gtins": ["7891000315507", "7891000315507"]}, "gtins.1", "gtin_duplicate"),
    ("product", {"gtins": ["78910003155"]}, "gtins.0", "gtin_length"),
    ("product", {"ncm": "2203000"}, "ncm", "ncm_format"),
    ("product", {"ncm": "12345678"}, "ncm", "ncm_unknown"),
    ("product", {"cest": "0399999"}, "cest", "cest_unknown"),
    ("product", {"ncm": "04011010"}, "cest", "cest_ncm_mismatch"),
    ("product", {"unit": "UNIDADE"}, "unit", "code_format"),
    ("product", {"shelf_location": "x" * 41}, "shelf_location", "max_length"),
    ("tax_rule", {"code": "x" * 21}, "code", "max_length"),
    ("tax_rule", {"cfop": "5999"}, "cfop", "cfop_unknown"),
    ("tax_rule", {"cfop": "4102"}, "cfop", "cfop_first_digit"),
    ("tax_rule", {"icms_cst": "01"}, "icms_cst", "cst_unknown"),
    ("tax_rule", {"icms_cst": "100"}, "icms_cst", "cst_unknown"),
    ("tax_rule", {"pis_cst": "10"}, "pis_cst", "cst_unknown"),
    ("tax_rule", {"cofins_cst": 1}, "cofins_cst", "cst_unknown"),
    ("tax_rule", {"icms_rate": "100.5"}, "icms_rate", "percentage_range"),
    ("tax_rule", {"icms_rate": 18.0}, "icms_rate", "percentage_not_string"),
    ("tax_rule", {"ncm_prefix": "2"}, "ncm_prefix", "ncm_prefix_format"),
    ("price_table", {"stores": ["loja-01", "Loja 02"]}, "stores.1", "store_id_format"),
    ("price_table", {"stores": ["loja-01", "loja-01"]}, "stores.1", "store_duplicate"),
    ("price_table", {"stores": None}, "stores", "required"),
    ("price", {"price": "0.00"}, "price", "money_minimum"),
    ("price", {"price": 12.9}, "price", "money_not_string"),
    ("price", {"price": "12.999"}, "price", "money_scale"),
    ("price", {"price": "doze"}, "price", "money_format"),
    ("price", {"promotional_price": "0"}, "promotional_price", "money_minimum"),
    ("price", {"promotional_price": "13.00"}, "promotional_price", "promotional_price_above_price"),
    ("price", {"product": "cerv-600"}, "product", "code_format"),
    ("customer", {"id": "42"}, "id", "uuid_format"),
    ("customer", {"document": "111.111.111-11"}, "document", "cpf_format"),
    ("customer", {"document": "123.456.789-08"}, "document", "cpf_check_digit"),
    ("customer", {"document": "12ABC34501DE36"}, "document", "cnpj_check_digit"),
    ("customer", {"document": "1234"}, "document", "document_format"),
    ("customer", {"phone": "4321"}, "phone", "phone_format"),
    ("customer", {"municipality": "9999999"}, "municipality", "ibge_unknown"),
    ("customer", {"name": "x" * 121}, "name", "max_length"),
    ("operator", {"id": "not-a-uuid"}, "id", "uuid_format"),
    ("operator", {"store_id": "Loja_01"}, "store_id", "store_id_format"),
    ("operator", {"code": "A1"}, "code", "code_format"),
    ("operator", {"code": "12345678901"}, "code", "code_format"),
    ("operator", {"role": "owner"}, "role", "choice"),
]


@pytest.mark.parametrize(
    ("entity", "changes", "field", "rule"),
    ENTITY_RULE_CASES,
    ids=[f"{entity}-{rule}-{field}" for entity, _, field, rule in ENTITY_RULE_CASES],
)
def test_entity_rule(
    tables: ReferenceTables, entity: str, changes: dict[str, object], field: str, rule: str
) -> None:
    error = only_error(entity, with_fields(entity, **changes), tables)

    assert error.rule == rule
    assert error.field == field
    assert error.message
    assert error.message_pt_br
