"""Official Brazilian code tables: NCM, CEST, CFOP, CST/CSOSN and IBGE municipalities.

The tables are CSV files in `data/` beside this module (see data/README.md for their
origin). A deployment loads newer tables in the same format from the directory named by
LOJASYNC_REFERENCE_DIR.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from lojasync.errors import ConfigurationError

BUNDLED_REFERENCE_DIR = Path(__file__).with_name("data")
REFERENCE_DIR_VARIABLE = "LOJASYNC_REFERENCE_DIR"

NCM_FILE = "ncm.csv"
CEST_FILE = "cest.csv"
CFOP_FILE = "cfop.csv"
CST_FILE = "cst.csv"
MUNICIPALITIES_FILE = "municipalities.csv"

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class CestEntry:
    code: str
    segment: str
    description: str
    ncm_prefixes: tuple[str, ...]
    """NCM codes or code prefixes (2 to 8 digits) that the CEST covers; empty means any."""


@dataclass(frozen=True)
class CfopEntry:
    code: str
    description: str
    direction: Direction


@dataclass(frozen=True)
class CstEntry:
    tax: str
    """Tax name as the table writes it: icms, icmssn (CSOSN), ipi, pis, cofins, ibs, cbs, is."""
    code: str
    description: str
    applies_to: str
    """Operations the code is for: "in", "out" or "all"."""


@dataclass(frozen=True)
class Municipality:
    ibge_code: str
    name: str
    uf: str


@dataclass(frozen=True)
class ReferenceTables:
    """The loaded tables, keyed by code; read-only."""

    ncm: Mapping[str, str]
    """NCM code (8 digits) to description."""
    cest: Mapping[str, CestEntry]
    cfop: Mapping[str, CfopEntry]
    cst: Mapping[tuple[str, str], CstEntry]
    """(tax, code) to entry, e.g. ("icms", "00")."""
    municipalities: Mapping[str, Municipality]
    """IBGE code (7 digits) to municipality."""

    @cached_property
    def cst_taxes(self) -> frozenset[str]:
        """Tax names that have codes in the CST table."""
        return frozenset(tax for tax, _ in self.cst)


class _Row:
    """One CSV row with its file and line, for error messages."""

    def __init__(self, path: Path, line: int, values: dict[str, str]) -> None:
        self.path = path
        self.line = line
        self.values = values

    def __getitem__(self, column: str) -> str:
        return self.values[column].strip()

    def require(self, column: str, pattern: str, description: str) -> str:
        value = self[column]
        if re.fullmatch(pattern, value) is None:
            raise ConfigurationError(
                f"{self.path}, line {self.line}: {column} {value!r} is not {description}; fix the "
                "row or load the bundled tables by unsetting "
                f"{REFERENCE_DIR_VARIABLE}."
            )
        return value


def _read_rows(directory: Path, name: str, columns: tuple[str, ...]) -> Iterator[_Row]:
    path = directory / name
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot open reference table {path}: {exc.strerror}; the directory must contain "
            f"{NCM_FILE}, {CEST_FILE}, {CFOP_FILE}, {CST_FILE} and {MUNICIPALITIES_FILE}."
        ) from exc

    with handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or ())]
        if missing:
            raise ConfigurationError(
                f"reference table {path} lacks the columns {', '.join(missing)}; its header "
                f"must contain {', '.join(columns)}."
            )
        for values in reader:
            yield _Row(path, reader.line_num, values)


def _load_ncm(directory: Path) -> dict[str, str]:
    """Read the NCM table, keeping the first row of each code.

    The table repeats some codes: the later rows are TIPI "Ex" exceptions of the code
    (e.g. "Ex 01 - Embalagens imediatas ...") or plain duplicates, so the first row carries
    the description of the code itself.
    """
    ncm: dict[str, str] = {}
    for row in _read_rows(directory, NCM_FILE, ("code", "description")):
        code = row.require("code", r"[0-9]{8}", "an 8-digit NCM code")
        ncm.setdefault(code, row["description"])
    return ncm


def _restore_leading_zero(prefix: str, ncm_prefixes: frozenset[str]) -> str:
    """Return the CEST prefix with the leading zero that the source table dropped.

    Some rows of the shipped CEST table lost the leading zero of NCM codes in chapters
    01 to 09, e.g. UHT milk (CEST 17.016.00) lists "4011010" for NCM 0401.10.10. A prefix
    that matches no NCM code but does with a zero in front gets the zero back. A prefix
    that lost its zero yet still matches some other NCM code cannot be detected this way.
    """
    if prefix in ncm_prefixes or "0" + prefix not in ncm_prefixes:
        return prefix
    return "0" + prefix


def _load_cest(directory: Path, ncm_codes: frozenset[str]) -> dict[str, CestEntry]:
    ncm_prefixes = frozenset(code[:length] for code in ncm_codes for length in range(2, 9))
    cest: dict[str, CestEntry] = {}
    columns = ("code", "segment", "description", "ncm_prefixes")
    for row in _read_rows(directory, CEST_FILE, columns):
        code = row.require("code", r"[0-9]{7}", "a 7-digit CEST code")
        prefixes = row.require(
            "ncm_prefixes",
            r"([0-9]{2,8}( +[0-9]{2,8})*)?",
            "space-separated 2- to 8-digit NCM prefixes",
        )
        restored = tuple(_restore_leading_zero(prefix, ncm_prefixes) for prefix in prefixes.split())
        entry = CestEntry(code, row["segment"], row["description"], restored)
        cest.setdefault(code, entry)
    return cest


def _load_cfop(directory: Path) -> dict[str, CfopEntry]:
    cfop: dict[str, CfopEntry] = {}
    for row in _read_rows(directory, CFOP_FILE, ("code", "description", "direction")):
        code = row.require("code", r"[0-9]{4}", "a 4-digit CFOP code")
        direction: Direction = (
            "in" if row.require("direction", r"in|out", '"in" or "out"') == "in" else "out"
        )
        cfop.setdefault(code, CfopEntry(code, row["description"], direction))
    return cfop


def _load_cst(directory: Path) -> dict[tuple[str, str], CstEntry]:
    cst: dict[tuple[str, str], CstEntry] = {}
    for row in _read_rows(directory, CST_FILE, ("tax", "code", "description", "applies_to")):
        tax = row.require("tax", r"[a-z]{1,10}", "a lower-case tax name")
        code = row.require("code", r"[0-9]{2,3}", "a 2- or 3-digit CST code")
        entry = CstEntry(tax, code, row["description"], row["applies_to"])
        cst.setdefault((tax, code), entry)
    return cst


def _load_municipalities(directory: Path) -> dict[str, Municipality]:
    municipalities: dict[str, Municipality] = {}
    for row in _read_rows(directory, MUNICIPALITIES_FILE, ("ibge_code", "name", "uf")):
        code = row.require("ibge_code", r"[0-9]{7}", "a 7-digit IBGE code")
        uf = row.require("uf", r"[A-Z]{2}", "a two-letter UF")
        municipalities.setdefault(code, Municipality(code, row["name"], uf))
    return municipalities


@lru_cache(maxsize=8)
def _load_directory(directory: Path) -> ReferenceTables:
    if not directory.is_dir():
        raise ConfigurationError(f"reference table directory {directory} does not exist.")

    ncm = _load_ncm(directory)
    return ReferenceTables(
        ncm=MappingProxyType(ncm),
        cest=MappingProxyType(_load_cest(directory, frozenset(ncm))),
        cfop=MappingProxyType(_load_cfop(directory)),
        cst=MappingProxyType(_load_cst(directory)),
        municipalities=MappingProxyType(_load_municipalities(directory)),
    )


def load_reference_tables(directory: Path | None = None) -> ReferenceTables:
    """Load the reference tables from `directory`, once per directory.

    Without `directory`, the tables come from LOJASYNC_REFERENCE_DIR if it is set and
    non-empty, else from the bundled copy. Rows that repeat a code are ignored, so the
    first row of each code wins. Raises ConfigurationError naming the file and line of
    a missing file, a missing column or a malformed code.
    """
    if directory is None:
        configured = os.environ.get(REFERENCE_DIR_VARIABLE, "").strip()
        if configured and not Path(configured).is_dir():
            raise ConfigurationError(
                f"{REFERENCE_DIR_VARIABLE}={configured!r} is not a directory; point it at a "
                "directory with the reference CSV files, or unset it to use the bundled tables."
            )
        directory = Path(configured) if configured else BUNDLED_REFERENCE_DIR
    return _load_directory(directory.resolve())


def reference_records(tables: ReferenceTables) -> Iterator[tuple[str, dict[str, object]]]:
    """Yield every table entry as an (entity, record) pair for the entity catalog.

    Entities come in the order ncm, cest, cfop, cst, municipality, one record per code.
    Each record has the fields of the catalog entity of that name.
    """
    for code, description in tables.ncm.items():
        yield "ncm", {"code": code, "description": description}
    for cest in tables.cest.values():
        yield (
            "cest",
            {
                "code": cest.code,
                "segment": cest.segment,
                "description": cest.description,
                "ncm_prefixes": list(cest.ncm_prefixes),
            },
        )
    for cfop in tables.cfop.values():
        yield (
            "cfop",
            {"code": cfop.code, "description": cfop.description, "direction": cfop.direction},
        )
    for cst in tables.cst.values():
        yield (
            "cst",
            {
                "tax": cst.tax,
                "code": cst.code,
                "description": cst.description,
                "applies_to": cst.applies_to,
            },
        )
    for municipality in tables.municipalities.values():
        yield (
            "municipality",
            {
                "ibge_code": municipality.ibge_code,
                "name": municipality.name,
                "uf": municipality.uf,
            },
        )
