"""Checks of Brazilian identifiers, fiscal codes and money values, on real table rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import pytest

from lojasync.errors import LojasyncError
from lojasync.reference import ReferenceTables, load_reference_tables
from lojasync.validation import (
    FieldError,
    FieldInvalid,
    check_cest,
    check_cfop,
    check_cfop_known,
    check_choice,
    check_cnpj,
    check_cpf,
    check_cpf_or_cnpj,
    check_cst,
    check_email,
    check_gtin,
    check_ibge_municipality,
    check_money,
    check_ncm,
    check_payment_kind,
    check_percentage,
    check_phone,
    check_text,
    check_uf,
    check_uuid,
)


@pytest.fixture(scope="module")
def tables() -> ReferenceTables:
    return load_reference_tables()


def rejection(check: Callable[[], object]) -> FieldError:
    """Run a check that must fail and return its error."""
    with pytest.raises(FieldInvalid) as raised:
        check()
    return raised.value.error


# --- FieldError and FieldInvalid ------------------------------------------------------------


def test_field_invalid_exception_bases() -> None:
    error = rejection(lambda: check_gtin("123"))

    exception = FieldInvalid(error)

    assert isinstance(exception, ValueError)
    assert isinstance(exception, LojasyncError)


def test_field_error_as_dict_is_json() -> None:
    error = rejection(lambda: check_money(float("nan")))

    encoded = json.dumps(error.as_dict(), allow_nan=False)

    assert json.loads(encoded)["rule"] == "money_not_string"
    assert json.loads(encoded)["value"] == "nan"


def test_field_error_has_both_languages() -> None:
    error = rejection(lambda: check_gtin("7891000315508", field="gtins.1"))

    assert error.field == "gtins.1"
    assert "7891000315508" in error.message
    assert "7891000315508" in error.message_pt_br
    assert error.message != error.message_pt_br


# --- GTIN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7891000315507", "7891000315507"),  # EAN-13
        ("78935761", "78935761"),  # EAN-8, check digit computed with stdnum: 1
        ("036000291452", "036000291452"),  # UPC-A
        ("17891000315504", "17891000315504"),  # GTIN-14
        (" 7891000315507 ", "7891000315507"),
    ],
)
def test_gtin_accepts_valid(raw: str, expected: str) -> None:
    assert check_gtin(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("7891000315508", "gtin_check_digit"),
        ("78935762", "gtin_check_digit"),
        ("789100031550", "gtin_check_digit"),
        ("78910003155", "gtin_length"),
        ("789100031550712", "gtin_length"),
        ("7891000-315507", "gtin_format"),
        ("789100031550\u0667", "gtin_format"),  # Arabic-Indic digit seven, not ASCII
        ("SEM GTIN", "gtin_format"),
        ("0000000000000", "gtin_format"),
        (7891000315507, "gtin_format"),
        (None, "gtin_format"),
    ],
)
def test_gtin_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_gtin(raw, field="gtins.0"))

    assert error.rule == rule
    assert error.field == "gtins.0"
    assert error.value == raw


# --- NCM and CEST -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["22030000", "2203.00.00", " 22030000 "])
def test_ncm_accepts_known_code(tables: ReferenceTables, raw: str) -> None:
    assert check_ncm(raw, tables) == "22030000"


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("2203000", "ncm_format"),
        ("2203.00.0A", "ncm_format"),
        (22030000, "ncm_format"),
        ("12345678", "ncm_unknown"),
    ],
)
def test_ncm_rejects_invalid(tables: ReferenceTables, raw: object, rule: str) -> None:
    error = rejection(lambda: check_ncm(raw, tables))

    assert error.rule == rule
    assert error.field == "ncm"


@pytest.mark.parametrize(
    ("cest", "ncm"),
    [
        ("03.021.00", "22030000"),  # beer in returnable glass bottles, NCM 2203.00.00
        ("0302100", "22030000"),
        ("1701600", "04011010"),  # UHT milk; the table lists the prefix without its zero
        ("2806400", "95030010"),  # children's articles, prefix "95"
        ("0199900", "87089990"),  # a CEST without NCM prefixes accepts any NCM
    ],
)
def test_cest_accepts_covered_ncm(tables: ReferenceTables, cest: str, ncm: str) -> None:
    assert check_cest(cest, ncm, tables) == cest.replace(".", "")


@pytest.mark.parametrize(
    ("cest", "ncm", "rule"),
    [
        ("030210", "22030000", "cest_format"),
        ("03.021.0X", "22030000", "cest_format"),
        (302100, "22030000", "cest_format"),
        ("0399999", "22030000", "cest_unknown"),
        ("0302100", "04011010", "cest_ncm_mismatch"),
        ("1701600", "40111000", "cest_ncm_mismatch"),
    ],
)
def test_cest_rejects_invalid(tables: ReferenceTables, cest: object, ncm: str, rule: str) -> None:
    error = rejection(lambda: check_cest(cest, ncm, tables))

    assert error.rule == rule
    assert error.field == "cest"


def test_cest_mismatch_lists_allowed_prefixes(tables: ReferenceTables) -> None:
    error = rejection(lambda: check_cest("0302100", "04011010", tables))

    assert "22030000" in error.message
    assert "22030000" in error.message_pt_br


def test_cest_mismatch_truncates_long_prefix_list(tables: ReferenceTables) -> None:
    # CEST 28.061.00 lists 17 NCM chapters; the message shows 10 and counts the rest.
    error = rejection(lambda: check_cest("2806100", "01012100", tables))

    assert "73 and 7 more" in error.message
    assert "73 e mais 7" in error.message_pt_br


# --- CFOP and CST -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("5102", "5102"), ("5.102", "5102"), ("1102", "1102")]
)
def test_cfop_accepts_valid(raw: str, expected: str) -> None:
    assert check_cfop(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("510", "cfop_format"),
        ("51020", "cfop_format"),
        (5102, "cfop_format"),
        ("4102", "cfop_first_digit"),
        ("8102", "cfop_first_digit"),
        ("0102", "cfop_first_digit"),
    ],
)
def test_cfop_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_cfop(raw))

    assert error.rule == rule
    assert error.field == "cfop"


def test_cfop_known_accepts_table_code(tables: ReferenceTables) -> None:
    assert check_cfop_known("5.405", tables) == "5405"


def test_cfop_known_rejects_missing_code(tables: ReferenceTables) -> None:
    error = rejection(lambda: check_cfop_known("5999", tables))

    assert error.rule == "cfop_unknown"
    assert error.field == "cfop"


@pytest.mark.parametrize(
    ("tax", "code"),
    [("icms", "00"), ("icms", "60"), ("icmssn", "102"), ("pis", "01"), ("cofins", "49")],
)
def test_cst_accepts_table_code(tables: ReferenceTables, tax: str, code: str) -> None:
    assert check_cst(tax, code, tables, "icms_cst") == code


@pytest.mark.parametrize(
    ("tax", "code"), [("icms", "01"), ("icms", "102"), ("icmssn", "00"), ("pis", 1), ("vat", "00")]
)
def test_cst_rejects_code_not_in_table(tables: ReferenceTables, tax: str, code: object) -> None:
    error = rejection(lambda: check_cst(tax, code, tables, "icms_cst"))

    assert error.rule == "cst_unknown"
    assert error.field == "icms_cst"


def test_cst_error_lists_valid_codes(tables: ReferenceTables) -> None:
    error = rejection(lambda: check_cst("icmssn", "100", tables, "icms_cst"))

    assert "101, 102, 103" in error.message


# --- CPF and CNPJ -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123.456.789-09", "12345678909"),
        ("12345678909", "12345678909"),
        (" 123 456 789 09 ", "12345678909"),
    ],
)
def test_cpf_accepts_valid(raw: str, expected: str) -> None:
    assert check_cpf(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("123.456.789-08", "cpf_check_digit"),
        ("12345678900", "cpf_check_digit"),
        ("1234567890", "cpf_format"),
        ("123.456.789-0A", "cpf_format"),
        ("111.111.111-11", "cpf_format"),
        ("00000000000", "cpf_format"),
        (12345678909, "cpf_format"),
    ],
)
def test_cpf_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_cpf(raw, field="document"))

    assert error.rule == rule
    assert error.field == "document"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("11.222.333/0001-81", "11222333000181"),
        ("12ABC34501DE35", "12ABC34501DE35"),  # alphanumeric CNPJ, valid from July 2026
        ("12.abc.345/01de-35", "12ABC34501DE35"),
    ],
)
def test_cnpj_accepts_valid(raw: str, expected: str) -> None:
    assert check_cnpj(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("11.222.333/0001-82", "cnpj_check_digit"),
        ("12ABC34501DE36", "cnpj_check_digit"),
        ("12ABC34501DE3", "cnpj_format"),
        ("12ABC34501DEX5", "cnpj_format"),  # check digits are always digits
        ("12ABC34501DE35!", "cnpj_format"),
        ("11111111111111", "cnpj_format"),
        ("00000000000000", "cnpj_format"),
        (11222333000181, "cnpj_format"),
    ],
)
def test_cnpj_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_cnpj(raw, field="cnpj"))

    assert error.rule == rule
    assert error.field == "cnpj"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123.456.789-09", "12345678909"),
        ("11.222.333/0001-81", "11222333000181"),
        ("12ABC34501DE35", "12ABC34501DE35"),
    ],
)
def test_document_accepts_cpf_or_cnpj(raw: str, expected: str) -> None:
    assert check_cpf_or_cnpj(raw) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("123456789", "document_format"),
        ("123456789012", "document_format"),
        (12345678909, "document_format"),
        ("123.456.789-08", "cpf_check_digit"),
        ("11.222.333/0001-82", "cnpj_check_digit"),
    ],
)
def test_document_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_cpf_or_cnpj(raw))

    assert error.rule == rule
    assert error.field == "document"


# --- Municipality and UF ------------------------------------------------------------------


def test_ibge_accepts_known_municipality(tables: ReferenceTables) -> None:
    assert check_ibge_municipality(" 3550308 ", tables) == "3550308"


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("355030", "ibge_format"),
        ("35503O8", "ibge_format"),
        (3550308, "ibge_format"),
        ("3550300", "ibge_unknown"),
    ],
)
def test_ibge_rejects_invalid(tables: ReferenceTables, raw: object, rule: str) -> None:
    error = rejection(lambda: check_ibge_municipality(raw, tables))

    assert error.rule == rule
    assert error.field == "municipality"


@pytest.mark.parametrize(("raw", "expected"), [("SP", "SP"), ("df", "DF"), (" rs ", "RS")])
def test_uf_accepts_state(raw: str, expected: str) -> None:
    assert check_uf(raw) == expected


@pytest.mark.parametrize("raw", ["XX", "S", "SPP", 35, None])
def test_uf_rejects_unknown(raw: object) -> None:
    error = rejection(lambda: check_uf(raw))

    assert error.rule == "uf_unknown"
    assert error.field == "uf"


# --- Money and percentages ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.90", "12.90"),
        ("12.9", "12.90"),
        ("12", "12.00"),
        (12, "12.00"),
        ("0", "0.00"),
        ("12.900", "12.90"),  # extra zeros lose nothing
        ("007.50", "7.50"),
        (Decimal("3.5"), "3.50"),
        ("123456789012345678901234567890.12", "123456789012345678901234567890.12"),
    ],
)
def test_money_accepts_valid(raw: object, expected: str) -> None:
    amount = check_money(raw)

    assert amount == Decimal(expected)
    assert str(amount) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (12.9, "money_not_string"),
        (12.0, "money_not_string"),
        (float("inf"), "money_not_string"),
        ("12.905", "money_scale"),
        ("0.001", "money_scale"),
        ("12,90", "money_format"),
        ("1.234,56", "money_format"),
        ("1e3", "money_format"),
        ("NaN", "money_format"),
        ("Infinity", "money_format"),
        (Decimal("NaN"), "money_format"),
        ("", "money_format"),
        ("R$ 12.90", "money_format"),
        ("+12.90", "money_format"),
        (".50", "money_format"),
        (True, "money_format"),
        (None, "money_format"),
        ("-0.01", "money_minimum"),
        (-1, "money_minimum"),
    ],
)
def test_money_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_money(raw, field="price"))

    assert error.rule == rule
    assert error.field == "price"


def test_money_float_message_asks_for_string() -> None:
    error = rejection(lambda: check_money(12.9))

    assert '"12.90"' in error.message
    assert "string" in error.message


def test_money_minimum_is_configurable() -> None:
    error = rejection(lambda: check_money("0.00", minimum=Decimal("0.01")))

    assert error.rule == "money_minimum"
    assert "0.01" in error.message


@pytest.mark.parametrize(
    ("raw", "expected"), [("18", "18.00"), ("0", "0.00"), ("100.00", "100.00"), (7, "7.00")]
)
def test_percentage_accepts_valid(raw: object, expected: str) -> None:
    assert str(check_percentage(raw, field="icms_rate")) == expected


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("100.01", "percentage_range"),
        ("-1", "percentage_range"),
        (18.0, "percentage_not_string"),
        ("18.125", "percentage_scale"),
        ("18%", "percentage_format"),
    ],
)
def test_percentage_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_percentage(raw, field="icms_rate"))

    assert error.rule == rule
    assert error.field == "icms_rate"


# --- Payment kind, text and identifiers ----------------------------------------------------


@pytest.mark.parametrize("raw", ["01", "17", "99", " 04 "])
def test_payment_kind_accepts_tpag(raw: str) -> None:
    assert check_payment_kind(raw) == raw.strip()


@pytest.mark.parametrize("raw", ["1", "06", "14", "20", 17, None])
def test_payment_kind_rejects_other(raw: object) -> None:
    error = rejection(lambda: check_payment_kind(raw))

    assert error.rule == "payment_kind"
    assert error.field == "kind"


def test_text_strips_whitespace() -> None:
    assert check_text("  Cerveja  ", max_length=10) == "Cerveja"


@pytest.mark.parametrize(
    ("raw", "rule"), [("   ", "min_length"), ("x" * 11, "max_length"), (5, "type"), (None, "type")]
)
def test_text_rejects_invalid(raw: object, rule: str) -> None:
    error = rejection(lambda: check_text(raw, "name", max_length=10))

    assert error.rule == rule
    assert error.field == "name"


def test_choice_rejects_other_value() -> None:
    error = rejection(lambda: check_choice("IN", ("in", "out"), "direction"))

    assert error.rule == "choice"
    assert error.field == "direction"


@pytest.mark.parametrize(
    "raw",
    [
        "3F2B8C1E-6D4A-4E8B-9C55-0A1B2C3D4E5F",
        "3f2b8c1e6d4a4e8b9c550a1b2c3d4e5f",
        " 3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f ",
    ],
)
def test_uuid_normalizes_to_lower_case(raw: str) -> None:
    assert check_uuid(raw) == "3f2b8c1e-6d4a-4e8b-9c55-0a1b2c3d4e5f"


@pytest.mark.parametrize("raw", ["3f2b8c1e-6d4a-4e8b-9c55", "", 12, None])
def test_uuid_rejects_invalid(raw: object) -> None:
    error = rejection(lambda: check_uuid(raw))

    assert error.rule == "uuid_format"
    assert error.field == "id"


def test_email_accepts_address() -> None:
    assert check_email(" compras@example.com.br ") == "compras@example.com.br"


@pytest.mark.parametrize(
    "raw",
    [
        "compras",
        "compras@example",
        "a b@example.com",
        "a@@example.com",
        "a@" + "x" * 250 + ".com",
        1,
    ],
)
def test_email_rejects_invalid(raw: object) -> None:
    error = rejection(lambda: check_email(raw))

    assert error.rule == "email_format"
    assert error.field == "email"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(11) 98765-4321", "11987654321"),
        ("+55 11 3333-4444", "551133334444"),
        ("1133334444", "1133334444"),
    ],
)
def test_phone_keeps_digits(raw: str, expected: str) -> None:
    assert check_phone(raw) == expected


@pytest.mark.parametrize(
    "raw", ["333-4444", "+55 (11) 98765-4321 0", "(11) 9876A-4321", 11987654321]
)
def test_phone_rejects_invalid(raw: object) -> None:
    error = rejection(lambda: check_phone(raw))

    assert error.rule == "phone_format"
    assert error.field == "phone"
