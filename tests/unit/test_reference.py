"""Loading of the reference tables, bundled and from a configured directory."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from lojasync.catalog import ENTITIES, RecordInvalid, validate_record
from lojasync.errors import ConfigurationError
from lojasync.reference import (
    REFERENCE_DIR_VARIABLE,
    ReferenceTables,
    load_reference_tables,
    reference_records,
)

MINIMAL_TABLES = {
    "ncm.csv": "code,description\r\n22030000,Cervejas de malte.\r\n04011010,Leite UHT\r\n",
    "cest.csv": (
        "code,segment,description,ncm_prefixes\r\n"
        "0302100,03,Cerveja em garrafa de vidro retornável,22030000\r\n"
        "1701600,16,Leite longa vida,4011010\r\n"
    ),
    "cfop.csv": "code,description,direction\r\n5102,Venda de mercadoria,out\r\n",
    "cst.csv": "tax,code,description,applies_to\r\nicms,00,Tributada integralmente,all\r\n",
    "municipalities.csv": "ibge_code,name,uf\r\n3550308,São Paulo,SP\r\n",
}


def write_tables(directory: Path, **replacements: str) -> Path:
    """Write the minimal tables, with the named files replaced (e.g. ncm="...")."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in MINIMAL_TABLES.items():
        content = replacements.get(name.removesuffix(".csv"), text)
        (directory / name).write_text(content, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tables() -> ReferenceTables:
    return load_reference_tables()


# --- Bundled tables -----------------------------------------------------------------------


def test_bundled_tables_row_counts(tables: ReferenceTables) -> None:
    assert len(tables.ncm) == 10_934  # 11,543 rows, 609 of them repeat a code
    assert len(tables.cest) == 1_043
    assert len(tables.cfop) == 619
    assert len(tables.cst) == 159
    assert len(tables.municipalities) == 5_570


def test_bundled_csv_files_are_package_data() -> None:
    data = resources.files("lojasync.reference") / "data"

    names = {entry.name for entry in data.iterdir() if entry.name.endswith(".csv")}

    assert names == {"ncm.csv", "cest.csv", "cfop.csv", "cst.csv", "municipalities.csv"}


def test_ncm_keeps_first_row_of_repeated_code(tables: ReferenceTables) -> None:
    # The second row of 09030090 is the TIPI exception "Ex 01 - Embalagens imediatas ...".
    assert tables.ncm["09030090"] == "Mate. Outros"


def test_ncm_contains_no_ncm_code(tables: ReferenceTables) -> None:
    assert tables.ncm["00000000"] == "Sem NCM"


def test_cest_restores_dropped_leading_zero(tables: ReferenceTables) -> None:
    # UHT milk: the CSV lists "4011010 0401201" for NCM 0401.10.10 and 0401.20.1x.
    assert tables.cest["1701600"].ncm_prefixes == ("04011010", "0401201")


def test_cest_keeps_prefix_that_matches_nothing(tables: ReferenceTables) -> None:
    assert tables.cest["1301600"].ncm_prefixes == ("39269090", "901891")


def test_cest_keeps_prefix_that_matches_a_code(tables: ReferenceTables) -> None:
    # "4011" is heading 40.11 (new tyres), not 04.01 with its zero dropped.
    assert tables.cest["1600200"].ncm_prefixes == ("4011",)


def test_cest_without_prefixes_has_empty_tuple(tables: ReferenceTables) -> None:
    assert tables.cest["0199900"].ncm_prefixes == ()


def test_cfop_cst_and_municipality_entries(tables: ReferenceTables) -> None:
    assert tables.cfop["5102"].direction == "out"
    assert tables.cfop["1102"].direction == "in"
    assert tables.cst[("icmssn", "102")].description == "Tributada sem permissão de crédito"
    assert tables.municipalities["3550308"].name == "São Paulo"
    assert tables.municipalities["3550308"].uf == "SP"


def test_cst_taxes_lists_table_taxes(tables: ReferenceTables) -> None:
    expected = {"icms", "icmssn", "ipi", "pis", "cofins", "ibs", "cbs", "is"}

    assert tables.cst_taxes == expected


def test_tables_are_read_only(tables: ReferenceTables) -> None:
    with pytest.raises(TypeError):
        tables.ncm["99999999"] = "x"  # type: ignore[index]


def test_load_is_cached_per_directory(tmp_path: Path) -> None:
    directory = write_tables(tmp_path / "tables")

    first = load_reference_tables(directory)
    second = load_reference_tables(directory)

    assert first is second
    assert first is not load_reference_tables()


# --- Configured directory -----------------------------------------------------------------


def test_env_variable_selects_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = write_tables(tmp_path / "tables")
    monkeypatch.setenv(REFERENCE_DIR_VARIABLE, str(directory))

    loaded = load_reference_tables()

    assert set(loaded.ncm) == {"22030000", "04011010"}
    assert loaded.cest["1701600"].ncm_prefixes == ("04011010",)


def test_empty_env_variable_uses_bundled_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REFERENCE_DIR_VARIABLE, " ")

    loaded = load_reference_tables()

    assert len(loaded.municipalities) == 5_570


def test_env_variable_to_missing_directory_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REFERENCE_DIR_VARIABLE, str(tmp_path / "absent"))

    with pytest.raises(ConfigurationError) as raised:
        load_reference_tables()

    assert REFERENCE_DIR_VARIABLE in str(raised.value)
    assert "absent" in str(raised.value)


def test_missing_file_fails(tmp_path: Path) -> None:
    directory = write_tables(tmp_path / "tables")
    (directory / "cfop.csv").unlink()

    with pytest.raises(ConfigurationError) as raised:
        load_reference_tables(directory)

    assert "cfop.csv" in str(raised.value)


def test_missing_column_fails(tmp_path: Path) -> None:
    directory = write_tables(tmp_path / "tables", cfop="code,description\r\n5102,Venda\r\n")

    with pytest.raises(ConfigurationError) as raised:
        load_reference_tables(directory)

    assert "cfop.csv" in str(raised.value)
    assert "direction" in str(raised.value)


def test_malformed_code_fails_with_line(tmp_path: Path) -> None:
    ncm = "code,description\r\n22030000,Cervejas\r\n2203000,Sem um dígito\r\n"
    directory = write_tables(tmp_path / "tables", ncm=ncm)

    with pytest.raises(ConfigurationError) as raised:
        load_reference_tables(directory)

    assert "ncm.csv, line 3" in str(raised.value)
    assert "'2203000'" in str(raised.value)


# --- Records for the catalog --------------------------------------------------------------


def test_reference_records_cover_every_entry(tables: ReferenceTables) -> None:
    counts = Counter(entity for entity, _ in reference_records(tables))

    assert counts == {
        "ncm": 10_934,
        "cest": 1_043,
        "cfop": 619,
        "cst": 159,
        "municipality": 5_570,
    }


def test_reference_records_have_catalog_fields(tables: ReferenceTables) -> None:
    for entity, record in reference_records(tables):
        assert set(record) <= set(ENTITIES[entity].model.model_fields), entity


def test_reference_records_pass_catalog_validation(tables: ReferenceTables) -> None:
    failures: list[str] = []

    for entity, record in reference_records(tables):
        try:
            validate_record(entity, record, tables)
        except RecordInvalid as exc:
            failures.append(exc.message)

    assert failures == []


def test_reference_records_come_back_unchanged(tables: ReferenceTables) -> None:
    for entity, record in reference_records(tables):
        validated = validate_record(entity, record, tables)
        assert {name: validated[name] for name in record} == record, entity
