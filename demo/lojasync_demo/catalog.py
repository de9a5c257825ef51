"""Deterministic generator of a realistic Brazilian retail catalog for demos and load tests.

`build_catalog` returns every cadastro the ERP pushes to lojasync: the official reference
tables (NCM, CEST, CFOP, CST, IBGE municipalities), units, suppliers, payment methods, tax
rules, products, price tables and prices. Fiscal codes come from the reference tables, and
GTINs and CNPJs carry computed check digits, so every record passes
`lojasync.catalog.validate_record`. The same seed and arguments give the same catalog, and a
smaller `products` gives a prefix of the products and prices of a larger one.

Run `python -m lojasync_demo.catalog --products N --out FILE.jsonl` to write the catalog as
JSON lines.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import re
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stdnum import ean
from stdnum.br import cnpj as stdnum_cnpj

from lojasync.errors import ConfigurationError, LojasyncError
from lojasync.i18n import PORTUGUESE, detect_language
from lojasync.reference import ReferenceTables, load_reference_tables, reference_records

Record = dict[str, object]

REFERENCE_ENTITIES = ("ncm", "cest", "cfop", "cst", "municipality")
# Push order: every entity comes after the entities its records refer to.
PUSH_ORDER = (
    *REFERENCE_ENTITIES,
    "unit",
    "supplier",
    "payment_method",
    "tax_rule",
    "product",
    "price_table",
    "price",
)

DEFAULT_PRODUCTS = 10_000
DEFAULT_SEED = 2026
DEFAULT_STORE_IDS = ("loja-1", "loja-2", "loja-3")
BASE_PRICE_TABLE = "BASE"

SUPPLIER_COUNT = 200
# Every 25th supplier gets an alphanumeric CNPJ, the format issued from July 2026.
ALPHANUMERIC_CNPJ_EVERY = 25
CEST_SHARE = 0.40
"""Share of products drawn from the kinds that carry a CEST."""
GTIN14_SHARE = 0.05
GTIN8_SHARE = 0.02
STORE_PRICE_SHARE = 0.05
"""Share of products that get a price in each store's own price table."""
STORE_PROMOTION_SHARE = 0.40
"""Share of store-table prices that carry a promotional price."""
BRANDS_PER_DEPARTMENT = 30
DESCRIPTION_ATTEMPTS = 20

_STORE_ID = re.compile(r"[a-z0-9-]{1,40}")
_PRICE_TABLE_CODE_MAX = 20
# Cents of shelf prices: retail prices end in .90, .99, .49 and similar.
_PRICE_ENDINGS = (49, 79, 89, 90, 98, 99)


class CatalogOptionsInvalid(LojasyncError, ValueError):
    """An argument of `build_catalog` cannot produce a valid catalog."""

    def __init__(self, message: str, message_pt_br: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_pt_br = message_pt_br


class ReferenceTablesUnsuitable(LojasyncError):
    """The reference tables lack the NCM or CEST codes that a product kind needs."""


@dataclass
class Catalog:
    """Generated records by entity, each list in the order the ERP pushes them."""

    records: dict[str, list[Record]] = field(default_factory=dict)

    def ordered(self) -> Iterator[tuple[str, Record]]:
        """Yield (entity, record) pairs, entities in dependency order (PUSH_ORDER)."""
        for entity in PUSH_ORDER:
            for record in self.records.get(entity, ()):
                yield entity, record

    def counts(self) -> dict[str, int]:
        """Return the number of records per entity, in PUSH_ORDER."""
        return {entity: len(self.records.get(entity, ())) for entity in PUSH_ORDER}


# --- Units, payment methods and tax rules -------------------------------------------------

# (code, description, fractional)
UNITS: tuple[tuple[str, str, bool], ...] = (
    ("UN", "Unidade", False),
    ("KG", "Quilograma", True),
    ("G", "Grama", True),
    ("LT", "Litro", True),
    ("ML", "Mililitro", True),
    ("M", "Metro", True),
    ("CX", "Caixa", False),
    ("PCT", "Pacote", False),
    ("DZ", "Dúzia", False),
    ("FD", "Fardo", False),
    ("BD", "Bandeja", False),
    ("SC", "Saco", False),
    ("RL", "Rolo", False),
    ("PAR", "Par", False),
    ("KIT", "Kit", False),
)

# (code, description, tPag code of the NF-e/NFC-e)
PAYMENT_METHODS: tuple[tuple[str, str, str], ...] = (
    ("DINHEIRO", "Dinheiro", "01"),
    ("CREDITO", "Cartão de crédito", "03"),
    ("DEBITO", "Cartão de débito", "04"),
    ("PIX", "PIX", "17"),
    ("VALE_ALIM", "Vale-alimentação", "10"),
    ("VALE_REF", "Vale-refeição", "11"),
    ("CREDIARIO", "Crediário da loja", "05"),
)


@dataclass(frozen=True)
class TaxRule:
    code: str
    description: str
    cfop: str
    icms_cst: str
    """CST of ICMS (2 digits) or CSOSN of Simples Nacional taxpayers (3 digits)."""
    icms_rate: str
    pis_cst: str
    cofins_cst: str
    ncm_prefix: str | None = None


# PIS/COFINS CSTs: 01 is the basic rate and 06 the zero rate (cesta básica, fruits and
# vegetables). 04 is single-phase taxation (monofásico), where the manufacturer paid and the
# resale has rate zero. 49 covers other outbound operations (Simples Nacional, bonus
# shipments, losses).
TAX_RULES: tuple[TaxRule, ...] = (
    TaxRule("VENDA-18", "Venda tributada, ICMS 18%", "5102", "00", "18.00", "01", "01"),
    TaxRule("VENDA-12", "Venda tributada, ICMS 12%", "5102", "00", "12.00", "01", "01"),
    TaxRule("VENDA-7", "Venda tributada, ICMS 7%", "5102", "00", "7.00", "01", "01"),
    TaxRule("VENDA-25", "Venda de destilados, ICMS 25%", "5102", "00", "25.00", "01", "01", "2208"),
    TaxRule("VENDA-RED-BC", "Venda com redução de base de cálculo", "5102", "20", "18.00",
            "01", "01"),
    TaxRule("CESTA-ARROZ", "Arroz, cesta básica", "5102", "40", "0.00", "06", "06", "1006"),
    TaxRule("CESTA-FEIJAO", "Feijão, cesta básica", "5102", "40", "0.00", "06", "06", "0713"),
    TaxRule("HORTI-LEGUMES", "Hortaliças e legumes frescos", "5102", "40", "0.00", "06", "06",
            "07"),
    TaxRule("HORTI-FRUTAS", "Frutas frescas", "5102", "40", "0.00", "06", "06", "08"),
    TaxRule("OVOS", "Ovos frescos", "5102", "40", "0.00", "06", "06", "0407"),
    TaxRule("ST", "Venda de mercadoria com ICMS retido por ST", "5405", "60", "0.00", "01", "01"),
    TaxRule("ST-REFRIGERANTE", "Refrigerantes e águas, ST e monofásico", "5405", "60", "0.00",
            "04", "04", "2202"),
    TaxRule("ST-CERVEJA", "Cervejas, ST e monofásico", "5405", "60", "0.00", "04", "04", "2203"),
    TaxRule("ST-CAPILAR", "Preparações capilares, ST e monofásico", "5405", "60", "0.00",
            "04", "04", "3305"),
    TaxRule("ST-PERFUMARIA", "Perfumaria, ST e monofásico", "5405", "60", "0.00", "04", "04",
            "3303"),
    TaxRule("ST-LEITE", "Leite, ST e alíquota zero", "5405", "60", "0.00", "06", "06", "0401"),
    TaxRule("PADARIA-PAO", "Pão de produção própria", "5101", "00", "7.00", "06", "06", "19059090"),
    TaxRule("INTER-12", "Venda interestadual, ICMS 12%", "6102", "00", "12.00", "01", "01"),
    TaxRule("INTER-7", "Venda interestadual, ICMS 7%", "6102", "00", "7.00", "01", "01"),
    TaxRule("INTER-NAO-CONTRIB", "Venda interestadual a não contribuinte", "6108", "00", "12.00",
            "01", "01"),
    TaxRule("SN-VENDA", "Simples Nacional, venda sem crédito", "5102", "102", "0.00", "49", "49"),
    TaxRule("SN-ST", "Simples Nacional, ICMS cobrado por ST", "5405", "500", "0.00", "49", "49"),
    TaxRule("BONIFICACAO", "Remessa em bonificação", "5910", "00", "18.00", "49", "49"),
    TaxRule("PERDA", "Baixa de estoque por perda ou deterioração", "5927", "90", "0.00",
            "49", "49"),
)  # fmt: skip


# --- Product kinds ------------------------------------------------------------------------

MERCEARIA = "mercearia"
BEBIDAS = "bebidas"
LIMPEZA = "limpeza"
HIGIENE = "higiene"
HORTIFRUTI = "hortifruti"
ACOUGUE = "açougue"
PADARIA = "padaria"
FRIOS = "frios e laticínios"
BAZAR = "bazar"
DEPARTMENTS = (MERCEARIA, BEBIDAS, LIMPEZA, HIGIENE, HORTIFRUTI, ACOUGUE, PADARIA, FRIOS, BAZAR)

Size = tuple[str, float]
"""A package size as written in the description, and its price relative to the kind's
price range (1.0 for the reference size)."""


@dataclass(frozen=True)
class ProductKind:
    """A kind of product with its fiscal classification and shelf-price range."""

    department: str
    name: str
    variants: tuple[str, ...]
    sizes: tuple[Size, ...]
    price_range: tuple[float, float]
    """Shelf price in reais of the reference size (factor 1.0)."""
    ncm_prefixes: tuple[str, ...]
    """The product's NCM starts with one of these; with `cests`, it must also start with
    one of the chosen CEST's NCM prefixes."""
    cests: tuple[str, ...] = ()
    """CEST codes that products of the kind carry; empty for goods the CEST table omits."""
    unit: str = "UN"


def _kind(
    department: str,
    name: str,
    variants: tuple[str, ...],
    sizes: tuple[Size, ...],
    price_range: tuple[float, float],
    ncm_prefixes: tuple[str, ...],
    cests: tuple[str, ...] = (),
    unit: str = "UN",
) -> ProductKind:
    return ProductKind(department, name, variants, sizes, price_range, ncm_prefixes, cests, unit)


KG: tuple[Size, ...] = (("kg", 1.0),)

PRODUCT_KINDS: tuple[ProductKind, ...] = (
    # Bebidas: the CEST table lists every kind.
    _kind(BEBIDAS, "Refrigerante", ("cola", "guaraná", "laranja", "limão", "uva", "tubaína"),
          (("lata 350 ml", 1.0),), (3.29, 4.99), ("22021000",), ("0301002",)),
    _kind(BEBIDAS, "Refrigerante", ("cola", "guaraná", "laranja", "limão", "uva", "zero açúcar"),
          (("pet 600 ml", 1.0), ("pet 2 L", 1.8)), (4.49, 6.49), ("22021000",), ("0301001",)),
    _kind(BEBIDAS, "Água mineral", ("sem gás", "com gás"),
          (("500 ml", 1.0), ("1,5 L", 1.9)), (1.49, 2.99), ("22011000",), ("0300504",)),
    _kind(BEBIDAS, "Água mineral", ("sem gás",), (("fardo 6 x 1,5 L", 1.0),), (12.90, 18.90),
          ("22011000",), ("0300504",), "FD"),
    _kind(BEBIDAS, "Água mineral", ("sem gás",), (("galão retornável 20 L", 1.0),), (11.90, 17.90),
          ("22011000",), ("0302500",)),
    _kind(BEBIDAS, "Cerveja", ("pilsen", "puro malte", "lager", "weiss", "ipa"),
          (("lata 350 ml", 1.0), ("lata 473 ml", 1.3)), (3.49, 6.99), ("22030000",), ("0302103",)),
    _kind(BEBIDAS, "Cerveja", ("pilsen", "puro malte", "lager", "red ale"),
          (("long neck 355 ml", 1.0),), (4.99, 8.99), ("22030000",), ("0302101",)),
    _kind(BEBIDAS, "Cerveja sem álcool", ("pilsen", "puro malte"),
          (("lata 350 ml", 1.0),), (3.99, 5.99), ("22029100",), ("0302203",)),
    _kind(BEBIDAS, "Bebida energética", ("tradicional", "sem açúcar", "tropical", "melancia"),
          (("lata 250 ml", 1.0), ("lata 473 ml", 1.6)), (6.99, 10.99), ("22029900",), ("0301300",)),
    _kind(BEBIDAS, "Bebida isotônica", ("limão", "laranja", "tangerina", "uva"),
          (("500 ml", 1.0),), (4.49, 6.99), ("22029900",), ("0301500",)),
    _kind(BEBIDAS, "Suco", ("uva integral", "laranja", "pêssego", "maracujá", "caju", "goiaba"),
          (("1 L", 1.0), ("200 ml", 0.35)), (6.99, 14.90), ("2009",), ("1701000",)),
    _kind(BEBIDAS, "Cachaça", ("prata", "ouro", "envelhecida"),
          (("965 ml", 1.0), ("700 ml", 0.9)), (12.90, 39.90), ("22084",), ("0200400",)),
    _kind(BEBIDAS, "Vinho", ("tinto seco", "tinto suave", "branco seco", "rosé"),
          (("750 ml", 1.0),), (24.90, 69.90), ("2204",), ("0202400",)),
    _kind(BEBIDAS, "Vodka", ("tradicional",), (("998 ml", 1.0),), (29.90, 59.90),
          ("22086000",), ("0201800",)),
    # Frios e laticínios
    _kind(FRIOS, "Leite UHT", ("integral", "semidesnatado", "desnatado", "zero lactose"),
          (("1 L", 1.0),), (4.29, 6.49), ("0401",), ("1701600",)),
    _kind(FRIOS, "Leite UHT", ("integral", "semidesnatado", "desnatado"),
          (("caixa 12 x 1 L", 1.0),), (49.90, 72.90), ("0401",), ("1701600",), "CX"),
    _kind(FRIOS, "Iogurte", ("morango", "natural", "coco", "frutas vermelhas", "ameixa"),
          (("170 g", 1.0), ("bandeja 540 g", 2.6), ("garrafa 1,25 kg", 3.8)), (2.49, 4.29),
          ("0403",), ("1702100",)),
    _kind(FRIOS, "Requeijão", ("cremoso tradicional", "cremoso light", "com cheddar"),
          (("200 g", 1.0),), (6.99, 11.90), ("0406",), ("1702300",)),
    _kind(FRIOS, "Queijo muçarela", ("peça", "fatiado"), KG, (39.90, 59.90),
          ("04061010",), ("1702401",), "KG"),
    _kind(FRIOS, "Queijo", ("prato", "parmesão", "provolone", "gouda"), KG, (49.90, 99.90),
          ("040690",), ("1702400",), "KG"),
    _kind(FRIOS, "Manteiga", ("com sal", "sem sal"), (("200 g", 1.0), ("500 g", 2.3)),
          (11.90, 18.90), ("04051000",), ("1702500",)),
    _kind(FRIOS, "Margarina", ("com sal", "sem sal", "light"), (("500 g", 1.0), ("250 g", 0.6)),
          (6.49, 10.90), ("15171000",), ("1702600",)),
    _kind(FRIOS, "Creme de leite", ("tradicional", "light"), (("200 g", 1.0),), (3.49, 5.49),
          ("040140", "040229"), ("1701900",)),
    _kind(FRIOS, "Leite condensado", ("integral", "semidesnatado"), (("395 g", 1.0),),
          (5.49, 8.49), ("040299",), ("1702000",)),
    _kind(FRIOS, "Presunto", ("cozido", "cozido sem capa de gordura", "tender"), KG, (24.90, 44.90),
          ("16024100",), ("1707904",), "KG"),
    _kind(FRIOS, "Mortadela", ("tradicional", "defumada", "com azeitona", "de frango"), KG,
          (14.90, 32.90), ("16010000",), ("1707800",), "KG"),
    _kind(FRIOS, "Salsicha", ("hot dog", "de frango", "viena"), (("500 g", 1.0), ("3 kg", 5.2)),
          (7.49, 12.90), ("16010000",), ("1707700",)),
    # Mercearia
    _kind(MERCEARIA, "Arroz", ("branco tipo 1", "parboilizado tipo 1", "integral",
          "agulhinha tipo 1"), (("1 kg", 1.0), ("2 kg", 1.9), ("5 kg", 4.5)), (5.49, 7.99),
          ("100630",), unit="PCT"),
    _kind(MERCEARIA, "Arroz", ("arbóreo", "jasmim", "negro", "cateto integral"),
          (("500 g", 1.0), ("1 kg", 1.9)), (9.90, 19.90), ("100630",), unit="PCT"),
    _kind(MERCEARIA, "Feijão", ("carioca tipo 1", "preto tipo 1", "fradinho", "rajado", "jalo",
          "bolinha", "vermelho"), (("500 g", 0.55), ("1 kg", 1.0), ("2 kg", 1.9)), (6.99, 10.99),
          ("07133",), unit="PCT"),
    _kind(MERCEARIA, "Lentilha", ("tipo 1", "vermelha"), (("500 g", 1.0),), (7.99, 12.90),
          ("07134010",), unit="PCT"),
    _kind(MERCEARIA, "Grão-de-bico", ("tipo 1",), (("500 g", 1.0),), (8.99, 13.90),
          ("07132010",), unit="PCT"),
    _kind(MERCEARIA, "Canjica de milho", ("branca", "amarela"), (("500 g", 1.0),), (4.49, 6.99),
          ("11042300",), unit="PCT"),
    _kind(MERCEARIA, "Polvilho", ("doce", "azedo"), (("500 g", 1.0), ("1 kg", 1.9)), (5.49, 8.99),
          ("11081400",), unit="PCT"),
    _kind(MERCEARIA, "Fermento biológico seco", ("instantâneo",), (("10 g", 1.0), ("125 g", 6.0)),
          (1.49, 2.49), ("21021090",)),
    # NOTE: The CEST table lists coffee (17.096) and mate (17.098), but the bundled copy
    # lost the leading zero of their NCM prefixes ("901", "90300"), which then match chapter
    # 90 instead. Products of these two kinds carry no CEST until the table is fixed.
    _kind(MERCEARIA, "Erva-mate", ("para chimarrão", "tradicional", "moída grossa", "para tereré"),
          (("500 g", 1.0), ("1 kg", 1.9)), (8.99, 15.90), ("09030090",), unit="PCT"),
    _kind(MERCEARIA, "Chá preto", ("tradicional", "com limão", "com canela"), (("10 sachês", 1.0),),
          (3.99, 7.99), ("09023000",), ("1709700",), "CX"),
    _kind(MERCEARIA, "Canela", ("em pau", "em pó"), (("30 g", 1.0),), (3.49, 6.99), ("0906",)),
    _kind(MERCEARIA, "Pimenta-do-reino", ("em grão", "moída"), (("30 g", 1.0), ("100 g", 2.8)),
          (3.99, 7.99), ("090411", "090412")),
    _kind(MERCEARIA, "Orégano", ("desidratado",), (("10 g", 1.0), ("100 g", 6.5)), (2.49, 4.99),
          ("09109900",)),
    _kind(MERCEARIA, "Coco ralado", ("úmido e adoçado", "desidratado"),
          (("50 g", 1.0), ("100 g", 1.8)), (2.99, 5.49), ("08011100",), unit="PCT"),
    _kind(MERCEARIA, "Uva-passa", ("preta", "branca"), (("100 g", 1.0),), (5.99, 9.99),
          ("08062000",), unit="PCT"),
    _kind(MERCEARIA, "Castanha-de-caju", ("torrada e salgada", "natural"), (("100 g", 1.0),),
          (12.90, 19.90), ("08013200",), unit="PCT"),
    _kind(MERCEARIA, "Mel", ("silvestre", "de laranjeira", "de eucalipto"),
          (("280 g", 1.0), ("500 g", 1.7)), (14.90, 24.90), ("04090000",)),
    _kind(MERCEARIA, "Sal", ("refinado iodado", "grosso", "rosa", "marinho"), (("1 kg", 1.0),),
          (1.99, 4.99), ("25010020",), unit="PCT"),
    _kind(MERCEARIA, "Farinha de mandioca", ("torrada", "crua", "d'água", "biju"),
          (("500 g", 1.0), ("1 kg", 1.8)), (4.49, 7.99), ("11062000",), unit="PCT"),
    _kind(MERCEARIA, "Fubá", ("mimoso", "de milho amarelo"), (("1 kg", 1.0),), (3.49, 5.99),
          ("11022000",), unit="PCT"),
    _kind(MERCEARIA, "Café torrado e moído", ("tradicional", "extraforte", "gourmet",
          "descafeinado"), (("250 g", 1.0), ("500 g", 1.9)), (12.90, 24.90), ("09012",)),
    _kind(MERCEARIA, "Aveia", ("em flocos finos", "em flocos", "farelo"),
          (("200 g", 1.0), ("500 g", 2.2)), (4.49, 7.99), ("11041200",)),
    _kind(MERCEARIA, "Vinagre", ("de álcool", "de maçã", "de vinho tinto"), (("750 ml", 1.0),),
          (2.49, 6.99), ("22090000",)),
    _kind(MERCEARIA, "Macarrão", ("espaguete", "parafuso", "penne", "talharim", "ave-maria",
          "padre-nosso"), (("500 g", 1.0), ("1 kg", 1.9)), (3.49, 6.99), ("19021900",),
          ("1704903",), "PCT"),
    _kind(MERCEARIA, "Macarrão instantâneo", ("galinha", "carne", "legumes", "galinha caipira"),
          (("85 g", 1.0),), (1.69, 2.99), ("19023000",), ("1704701",), "PCT"),
    _kind(MERCEARIA, "Biscoito recheado", ("chocolate", "morango", "baunilha", "limão"),
          (("130 g", 1.0),), (2.49, 4.49), ("19053100",), ("1705300",), "PCT"),
    _kind(MERCEARIA, "Biscoito", ("cream cracker", "água e sal"), (("400 g", 1.0),), (4.49, 7.49),
          ("19053100",), ("1705302",), "PCT"),
    _kind(MERCEARIA, "Açúcar refinado", ("especial",), (("1 kg", 1.0),), (4.29, 6.49),
          ("17019900",), ("1709900",), "PCT"),
    _kind(MERCEARIA, "Açúcar cristal", ("tradicional", "orgânico"), (("2 kg", 1.0), ("5 kg", 2.3)),
          (7.49, 10.90), ("17011",), ("1710100",), "PCT"),
    _kind(MERCEARIA, "Óleo de soja", ("refinado",), (("900 ml", 1.0),), (6.49, 8.99),
          ("15079011",), ("1706500",)),
    _kind(MERCEARIA, "Azeite de oliva", ("extravirgem", "tipo único"),
          (("500 ml", 1.0), ("250 ml", 0.55)), (24.90, 49.90), ("1509",), ("1706700",)),
    _kind(MERCEARIA, "Molho de tomate", ("tradicional", "manjericão", "pizza", "bolonhesa"),
          (("sachê 340 g", 1.0),), (1.99, 3.99), ("21032010",), ("1704100",)),
    _kind(MERCEARIA, "Extrato de tomate", ("tradicional",), (("190 g", 1.0), ("340 g", 1.6)),
          (2.49, 4.49), ("2002",), ("1704000",)),
    _kind(MERCEARIA, "Maionese", ("tradicional", "light", "com limão"),
          (("500 g", 1.0), ("250 g", 0.6)), (6.99, 11.90), ("21039011",), ("1703900",)),
    _kind(MERCEARIA, "Catchup", ("tradicional", "picante"), (("400 g", 1.0),), (5.49, 9.49),
          ("21032010",), ("1703400",)),
    _kind(MERCEARIA, "Achocolatado em pó", ("tradicional", "50% cacau", "zero açúcar"),
          (("400 g", 1.0), ("800 g", 1.8)), (6.99, 11.90), ("18069000",), ("1700600",)),
    _kind(MERCEARIA, "Chocolate em barra", ("ao leite", "meio amargo", "70% cacau", "com amendoim"),
          (("90 g", 1.0),), (4.99, 9.99), ("18063210",), ("1700300",)),
    _kind(MERCEARIA, "Salgadinho de milho", ("queijo", "presunto", "cebola e salsa", "requeijão"),
          (("45 g", 1.0), ("100 g", 1.9)), (2.99, 4.99), ("19041000",), ("1703000",), "PCT"),
    _kind(MERCEARIA, "Batata palha", ("tradicional", "extrafina"), (("120 g", 1.0),), (5.49, 8.99),
          ("20052000",), ("1703200",), "PCT"),
    _kind(MERCEARIA, "Amendoim", ("japonês", "torrado e salgado", "crocante"), (("150 g", 1.0),),
          (3.99, 6.99), ("20081",), ("1703300",), "PCT"),
    _kind(MERCEARIA, "Milho de pipoca para micro-ondas", ("manteiga", "natural", "bacon"),
          (("100 g", 1.0),), (2.99, 4.99), ("20081900",), ("1710600",), "PCT"),
    _kind(MERCEARIA, "Farinha de trigo", ("tipo 1",), (("1 kg", 1.0),), (4.49, 6.99),
          ("11010010",), ("1704411",), "PCT"),
    _kind(MERCEARIA, "Mistura para bolo", ("chocolate", "baunilha", "laranja", "fubá", "cenoura"),
          (("400 g", 1.0),), (3.99, 6.49), ("190120",), ("1704600",), "PCT"),
    _kind(MERCEARIA, "Sardinha", ("em óleo", "ao molho de tomate"), (("125 g", 1.0),),
          (4.49, 7.99), ("160413",), ("1708100",)),
    _kind(MERCEARIA, "Leite em pó", ("integral", "desnatado"), (("400 g", 1.0), ("800 g", 1.9)),
          (14.90, 22.90), ("0402",), ("1701200",)),
    # Padaria
    _kind(PADARIA, "Pão francês", ("tradicional", "integral"), KG, (12.90, 19.90),
          ("19059090",), ("1706203",), "KG"),
    _kind(PADARIA, "Pão de forma", ("tradicional", "integral", "multigrãos", "sem casca"),
          (("500 g", 1.0),), (6.99, 12.90), ("190520",), ("1705000",)),
    _kind(PADARIA, "Bolo", ("chocolate", "laranja", "fubá", "cenoura com chocolate", "formigueiro"),
          (("400 g", 1.0),), (9.90, 19.90), ("19052090",), ("1705100",)),
    _kind(PADARIA, "Panetone", ("frutas cristalizadas", "gotas de chocolate"),
          (("400 g", 1.0), ("750 g", 1.7)), (14.90, 29.90), ("19052010",), ("1705200",)),
    _kind(PADARIA, "Torrada", ("tradicional", "integral"), (("160 g", 1.0),), (4.49, 7.49),
          ("19054000",), ("1705900",), "PCT"),
    _kind(PADARIA, "Biscoito de polvilho", ("salgado", "doce"), (("100 g", 1.0),), (3.99, 6.99),
          ("19059090",), ("1703102",), "PCT"),
    _kind(PADARIA, "Rosca", ("de coco", "de leite condensado", "de canela"), (("400 g", 1.0),),
          (9.90, 16.90), ("19059090",), ("1706201",)),
    # Higiene e perfumaria
    _kind(HIGIENE, "Creme dental", ("menta", "hortelã", "branqueador", "infantil", "sensível"),
          (("90 g", 1.0),), (3.49, 12.90), ("33061000",), ("2002300",)),
    _kind(HIGIENE, "Sabonete em barra", ("erva-doce", "aveia", "glicerina", "lavanda", "neutro"),
          (("85 g", 1.0),), (1.79, 4.49), ("34011190",), ("2003400",)),
    _kind(HIGIENE, "Sabonete líquido", ("erva-doce", "aveia", "lavanda"), (("250 ml", 1.0),),
          (7.99, 14.90), ("34013000",), ("2003700",)),
    _kind(HIGIENE, "Xampu", ("cabelos normais", "cabelos cacheados", "anticaspa", "infantil"),
          (("350 ml", 1.0),), (9.90, 24.90), ("33051000",), ("2001700",)),
    _kind(HIGIENE, "Condicionador", ("cabelos normais", "cabelos cacheados", "reparação"),
          (("350 ml", 1.0),), (9.90, 24.90), ("33059000",), ("2002100",)),
    _kind(HIGIENE, "Desodorante aerossol", ("masculino", "feminino", "sem perfume"),
          (("150 ml", 1.0),), (11.90, 19.90), ("33072090",), ("2003000",)),
    _kind(HIGIENE, "Papel higiênico", ("folha dupla neutro", "folha dupla perfumado",
          "folha simples"), (("4 rolos 30 m", 1.0), ("12 rolos 30 m", 2.8)), (5.99, 9.99),
          ("48181000",), ("2004300",), "PCT"),
    _kind(HIGIENE, "Fralda descartável", ("tamanho P", "tamanho M", "tamanho G", "tamanho XG"),
          (("pacote econômico", 1.0), ("pacote mega", 2.1)), (34.90, 59.90), ("96190000",),
          ("2004800",), "PCT"),
    _kind(HIGIENE, "Absorvente", ("com abas", "sem abas", "noturno"), (("8 unidades", 1.0),),
          (3.99, 8.99), ("96190000",), ("2005000",), "PCT"),
    _kind(HIGIENE, "Escova dental", ("macia", "média", "infantil"), (("1 unidade", 1.0),),
          (3.99, 14.90), ("96032100",), ("2005800",)),
    _kind(HIGIENE, "Fio dental", ("tradicional", "menta"), (("50 m", 1.0),), (5.99, 12.90),
          ("33062000",), ("2002400",)),
    _kind(HIGIENE, "Aparelho de barbear", ("descartável",), (("2 unidades", 1.0),), (5.99, 14.90),
          ("82121020",), ("2006400",), "PCT"),
    _kind(HIGIENE, "Algodão hidrófilo", ("em bolas", "em discos"), (("50 g", 1.0),), (3.49, 6.99),
          ("56012110",), ("2006500",), "PCT"),
    # Limpeza
    _kind(LIMPEZA, "Água sanitária", ("tradicional", "com perfume"), (("1 L", 1.0), ("2 L", 1.7)),
          (2.99, 4.99), ("28289011",), ("1100100",)),
    _kind(LIMPEZA, "Sabão em pó", ("multiação", "coco", "roupas coloridas"),
          (("800 g", 1.0), ("1,6 kg", 1.9)), (9.90, 16.90), ("34025000",), ("1100400",)),
    _kind(LIMPEZA, "Lava-roupas líquido", ("concentrado", "roupas brancas", "roupas escuras"),
          (("3 L", 1.0),), (24.90, 44.90), ("34025000",), ("1100600",)),
    _kind(LIMPEZA, "Detergente líquido", ("neutro", "limão", "maçã", "coco"), (("500 ml", 1.0),),
          (1.99, 3.49), ("34025000",), ("1100500",)),
    _kind(LIMPEZA, "Amaciante", ("concentrado", "tradicional", "bebê"),
          (("2 L", 1.0), ("5 L", 2.2)), (9.90, 19.90), ("38099190",), ("1100800",)),
    _kind(LIMPEZA, "Limpador multiuso", ("tradicional", "lavanda", "limão"), (("500 ml", 1.0),),
          (3.99, 7.99), ("3402",), ("1100700",)),
    _kind(LIMPEZA, "Esponja de limpeza", ("dupla face", "não risca"), (("3 unidades", 1.0),),
          (2.99, 6.99), ("39249000",), ("1100900",), "PCT"),
    _kind(LIMPEZA, "Palha de aço", ("tradicional",), (("8 unidades", 1.0),), (2.49, 4.49),
          ("73231000",), ("1101100",), "PCT"),
    _kind(LIMPEZA, "Saco de lixo", ("preto 30 L", "preto 50 L", "azul 100 L"),
          (("10 unidades", 1.0), ("30 unidades", 2.6)), (4.99, 11.90), ("392321",), ("1101200",),
          "PCT"),
    _kind(LIMPEZA, "Álcool líquido", ("70%", "46,2 INPM"), (("1 L", 1.0),), (6.99, 11.90),
          ("2207",), ("1101000",)),
    # Hortifruti: the CEST table does not list fresh fruits, vegetables and eggs.
    _kind(HORTIFRUTI, "Tomate", ("italiano", "salada", "débora"), KG, (5.99, 11.90), ("07020000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Tomate", ("cereja", "grape"), (("bandeja 250 g", 1.0),), (4.99, 8.99),
          ("07020000",), unit="BD"),
    _kind(HORTIFRUTI, "Batata", ("inglesa", "lavada", "asterix"), KG, (4.49, 8.99), ("07019000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Cebola", ("branca", "roxa"), KG, (3.99, 8.99), ("070310",), unit="KG"),
    _kind(HORTIFRUTI, "Alho", ("nacional", "roxo"), KG, (24.90, 39.90), ("070320",), unit="KG"),
    _kind(HORTIFRUTI, "Cenoura", ("especial",), KG, (3.49, 6.99), ("07061000",), unit="KG"),
    _kind(HORTIFRUTI, "Alface", ("crespa", "americana", "lisa", "roxa"), (("unidade", 1.0),),
          (2.49, 4.99), ("07051",)),
    _kind(HORTIFRUTI, "Abobrinha", ("italiana", "brasileira"), KG, (4.99, 8.99), ("07099300",),
          unit="KG"),
    _kind(HORTIFRUTI, "Pimentão", ("verde", "vermelho", "amarelo"), KG, (7.99, 19.90),
          ("07096000",), unit="KG"),
    _kind(HORTIFRUTI, "Banana", ("prata", "nanica", "maçã", "da terra"), KG, (4.49, 8.99),
          ("08039000",), unit="KG"),
    _kind(HORTIFRUTI, "Maçã", ("gala", "fuji", "verde"), KG, (8.99, 15.90), ("08081000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Laranja", ("pera", "lima", "bahia"), KG, (3.49, 6.99), ("08051000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Limão", ("tahiti", "siciliano"), KG, (4.99, 12.90), ("08055000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Mamão", ("formosa", "papaya"), KG, (5.99, 9.99), ("08072000",), unit="KG"),
    _kind(HORTIFRUTI, "Uva", ("thompson sem semente", "niágara", "vitória"),
          (("bandeja 500 g", 1.0),), (8.99, 16.90), ("08061000",), unit="BD"),
    _kind(HORTIFRUTI, "Melancia", ("graúda", "baby"), KG, (2.49, 4.99), ("08071100",), unit="KG"),
    _kind(HORTIFRUTI, "Mandioca", ("descascada", "com casca"), KG, (3.99, 7.99), ("07141000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Batata-doce", ("rosada", "branca", "roxa"), KG, (3.99, 7.99),
          ("07142000",), unit="KG"),
    _kind(HORTIFRUTI, "Abóbora", ("cabotiá", "moranga", "paulista"), KG, (2.99, 5.99),
          ("07099300",), unit="KG"),
    _kind(HORTIFRUTI, "Chuchu", ("verde",), KG, (2.99, 5.99), ("07099990",), unit="KG"),
    _kind(HORTIFRUTI, "Pepino", ("japonês", "comum"), KG, (3.99, 7.99), ("07070000",), unit="KG"),
    _kind(HORTIFRUTI, "Repolho", ("verde", "roxo"), KG, (2.99, 5.99), ("07049000",), unit="KG"),
    _kind(HORTIFRUTI, "Brócolis", ("ninja", "ramoso"), (("unidade", 1.0),), (5.99, 9.99),
          ("07041000",)),
    _kind(HORTIFRUTI, "Couve", ("manteiga",), (("maço", 1.0),), (2.99, 4.99), ("07049000",)),
    _kind(HORTIFRUTI, "Cheiro-verde", ("salsa e cebolinha",), (("maço", 1.0),), (1.99, 3.49),
          ("07099990",)),
    _kind(HORTIFRUTI, "Manga", ("palmer", "tommy", "espada"), KG, (4.99, 9.99), ("08045020",),
          unit="KG"),
    _kind(HORTIFRUTI, "Abacaxi", ("pérola", "havaí"), (("unidade", 1.0),), (5.99, 9.99),
          ("08043000",)),
    _kind(HORTIFRUTI, "Abacate", ("manteiga", "avocado"), KG, (6.99, 12.90), ("08044000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Goiaba", ("vermelha", "branca"), KG, (6.99, 11.90), ("08045010",),
          unit="KG"),
    _kind(HORTIFRUTI, "Pera", ("williams", "portuguesa", "asiática"), KG, (9.99, 16.90),
          ("08083000",), unit="KG"),
    _kind(HORTIFRUTI, "Morango", ("selecionado",), (("bandeja 250 g", 1.0),), (6.99, 12.90),
          ("08101000",), unit="BD"),
    _kind(HORTIFRUTI, "Kiwi", ("importado", "nacional"), KG, (14.90, 24.90), ("08105000",),
          unit="KG"),
    _kind(HORTIFRUTI, "Melão", ("amarelo", "cantaloupe", "gália"), KG, (4.99, 9.99),
          ("08071900",), unit="KG"),
    _kind(HORTIFRUTI, "Tangerina", ("ponkan", "murcote", "cravo"), KG, (4.99, 9.99),
          ("08052100",), unit="KG"),
    _kind(HORTIFRUTI, "Ovos de codorna", ("brancos",), (("30 unidades", 1.0),), (6.99, 10.99),
          ("04072900",), unit="BD"),
    _kind(HORTIFRUTI, "Ovos", ("brancos", "vermelhos", "caipira"),
          (("dúzia", 1.0),), (9.90, 15.90), ("04072100",), unit="DZ"),
    _kind(HORTIFRUTI, "Ovos", ("brancos", "vermelhos"), (("bandeja 30 unidades", 1.0),),
          (22.90, 34.90), ("04072100",), unit="BD"),
    # Açougue: the CEST table lists fresh meat.
    _kind(ACOUGUE, "Carne bovina", ("alcatra", "contrafilé", "picanha", "filé mignon", "maminha"),
          KG, (49.90, 89.90), ("0201",), ("1708400",), "KG"),
    _kind(ACOUGUE, "Carne bovina", ("acém", "músculo", "paleta", "peito", "costela"),
          KG, (27.90, 44.90), ("0201",), ("1708400",), "KG"),
    _kind(ACOUGUE, "Carne bovina moída", ("patinho", "acém"), (("bandeja 500 g", 1.0),),
          (17.90, 29.90), ("0202",), ("1708400",), "BD"),
    _kind(ACOUGUE, "Carne suína", ("pernil", "lombo", "costela", "bisteca"), KG, (17.90, 34.90),
          ("0203",), ("1708701",), "KG"),
    _kind(ACOUGUE, "Frango", ("inteiro congelado", "coxa e sobrecoxa", "peito", "filé de peito",
          "asa"), KG, (11.90, 27.90), ("020714", "020712"), ("1708700",), "KG"),
    _kind(ACOUGUE, "Linguiça", ("toscana", "calabresa", "de frango", "apimentada"), KG,
          (17.90, 32.90), ("16010000",), ("1707700",), "KG"),
    # Peixaria: the CEST table does not list fresh and frozen fish.
    _kind(ACOUGUE, "Filé de tilápia", ("fresco", "congelado"), KG, (39.90, 59.90), ("03046100",),
          unit="KG"),
    _kind(ACOUGUE, "Filé de salmão", ("fresco", "congelado"), KG, (69.90, 99.90), ("03044100",),
          unit="KG"),
    _kind(ACOUGUE, "Camarão", ("cinza limpo", "rosa inteiro", "sete-barbas"), KG, (49.90, 99.90),
          ("030617",), unit="KG"),
    # Bazar e utilidades
    _kind(BAZAR, "Papel-alumínio", ("30 cm x 7,5 m", "45 cm x 7,5 m"), (("rolo", 1.0),),
          (5.99, 11.90), ("76071990",), unit="RL"),
    _kind(BAZAR, "Filme de PVC", ("28 cm x 30 m",), (("rolo", 1.0),), (4.99, 8.99),
          ("39204900",), unit="RL"),
    _kind(BAZAR, "Copo descartável", ("200 ml", "50 ml"), (("100 unidades", 1.0),), (3.99, 7.99),
          ("39241000",), ("1400601",), "PCT"),
    _kind(BAZAR, "Vela", ("branca nº 7",), (("8 unidades", 1.0),), (5.99, 9.99), ("34060000",),
          unit="PCT"),
    _kind(BAZAR, "Fósforo", ("longo", "tradicional"), (("10 caixas", 1.0),), (3.99, 6.99),
          ("36050000",), unit="PCT"),
    _kind(BAZAR, "Pilha alcalina", ("AA", "AAA"), (("2 unidades", 1.0), ("4 unidades", 1.8)),
          (8.99, 16.90), ("850610",), unit="PCT"),
    _kind(BAZAR, "Mangueira de jardim", ("1/2 polegada", "3/4 polegada"), (("por metro", 1.0),),
          (2.99, 5.99), ("39173900",), unit="M"),
    _kind(BAZAR, "Carvão vegetal", ("para churrasco",), (("3 kg", 1.0), ("5 kg", 1.5)),
          (12.90, 19.90), ("44029000",), unit="SC"),
    _kind(BAZAR, "Vassoura", ("pelo sintético", "piaçava"), (("unidade", 1.0),), (9.90, 24.90),
          ("96031000",)),
    _kind(BAZAR, "Pano de chão", ("algodão", "microfibra"), (("unidade", 1.0),), (4.99, 9.99),
          ("63071000",)),
    _kind(BAZAR, "Chinelo de borracha", ("adulto", "infantil"), (("par", 1.0),), (14.90, 34.90),
          ("640220",), unit="PAR"),
    _kind(BAZAR, "Balde plástico", ("8 L", "12 L", "20 L"), (("unidade", 1.0),), (7.99, 19.90),
          ("39249000",)),
    _kind(BAZAR, "Pregador de roupa", ("de madeira", "de plástico"), (("12 unidades", 1.0),),
          (3.99, 7.99), ("44219900",), unit="PCT"),
    _kind(BAZAR, "Prato descartável de papel", ("15 cm", "21 cm"), (("10 unidades", 1.0),),
          (2.99, 5.99), ("48236900",), ("1401200",), "PCT"),
    _kind(BAZAR, "Pote plástico", ("redondo 500 ml", "retangular 1 L", "quadrado 750 ml"),
          (("unidade", 1.0), ("kit 3 unidades", 2.5)), (5.99, 12.90), ("39241000",),
          ("1400600",)),
    _kind(BAZAR, "Isqueiro", ("pequeno", "grande"), (("unidade", 1.0),), (3.99, 7.99),
          ("96131000",)),
    _kind(BAZAR, "Fita adesiva", ("transparente 45 mm x 45 m", "crepe 18 mm x 50 m"),
          (("rolo", 1.0),), (4.49, 9.99), ("39191010",), unit="RL"),
    _kind(BAZAR, "Cabide", ("de plástico", "de veludo"), (("kit 6 unidades", 1.0),), (8.99, 19.90),
          ("39264000",), unit="KIT"),
)  # fmt: skip


# --- Brand and supplier name word lists ---------------------------------------------------

# Brands are "<first> <second>", e.g. "Serra Nobre". The second words are invariable in
# gender, so every pair reads as correct Portuguese. The pairs are invented; some may match
# a real trademark by chance.
BRAND_FIRST_WORDS = (
    "Serra", "Vale", "Campo", "Flor", "Terra", "Sol", "Rio", "Monte", "Bosque", "Pomar",
    "Estrela", "Lago", "Recanto", "Colina", "Brisa", "Cerrado", "Pampa", "Planalto",
    "Cascata", "Horizonte", "Jequitibá", "Sabiá", "Jatobá", "Araucária",
)  # fmt: skip
BRAND_SECOND_WORDS = (
    "Azul", "Verde", "Real", "Nobre", "Alegre", "Feliz", "Forte", "Imperial", "Gentil",
    "Leal", "Vital", "Natural", "Tropical", "Colonial", "Paulista", "Capixaba", "Carioca",
    "Potiguar", "Celeste", "Suave", "do Sul", "do Oeste",
)  # fmt: skip

SUPPLIER_FAMILY_NAMES = (
    "Bortolini", "Zanella", "Fagundes", "Nogueira", "Carvalhaes", "Tedesco", "Scapini",
    "Andrade", "Moretti", "Cavalcanti", "Bezerra", "Albuquerque", "Pedrosa", "Lacerda",
    "Guimarães", "Toledo", "Falcão", "Brandão", "Figueiredo", "Menegatti", "Fontana",
    "Werner", "Schmitt", "Kuhn", "Sakamoto", "Takahashi", "Haddad", "Salim", "Vasconcelos",
    "Dal Molin", "Zimmermann", "Bianchini", "Peixoto", "Siqueira", "Mendonça", "Tavares",
)  # fmt: skip
SUPPLIER_PLACE_NAMES = (
    "Vale do Cedro", "Serra Alta", "Três Pinheiros", "Boa Colheita", "Santa Edwiges",
    "Campo Sereno", "Água Limpa", "Rincão Verde", "Morro Grande", "Barra Funda",
    "Capão Alto", "Ribeirão Fundo", "Linha Nova", "Cachoeira Alta", "Sete Lagoas do Sul",
)  # fmt: skip
# (sector in a legal name, sector in a trade name, companies that make such goods)
SUPPLIER_SECTORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("de Alimentos", "Alimentos", ("Indústria de Alimentos", "Cerealista", "Torrefação")),
    ("de Bebidas", "Bebidas", ("Indústria de Bebidas", "Engarrafadora", "Cervejaria")),
    ("de Produtos de Limpeza", "Limpeza", ("Indústria Química", "Saneantes")),
    ("de Cosméticos", "Cosméticos", ("Indústria de Cosméticos", "Laboratório")),
    ("de Hortifrutigranjeiros", "Hortifrúti", ("Cooperativa Agrícola", "Granja")),
    ("de Carnes", "Carnes", ("Frigorífico", "Abatedouro")),
    ("de Laticínios", "Laticínios", ("Laticínios", "Cooperativa de Laticínios")),
    ("de Utilidades Domésticas", "Utilidades", ("Indústria de Plásticos",)),
    ("de Papéis e Descartáveis", "Descartáveis", ("Indústria de Papéis",)),
)  # fmt: skip
SUPPLIER_TRADER_PREFIXES = ("Distribuidora", "Comercial", "Atacadista", "Importadora")
# Legal-form suffixes, "Ltda" weighted as the most common form of Brazilian companies.
SUPPLIER_LEGAL_FORMS = ("Ltda", "Ltda", "Ltda", "Ltda", "S.A.")
SUPPLIER_EMAIL_SHARE = 0.8
SUPPLIER_TRADE_NAME_SHARE = 0.9


# --- Helpers ------------------------------------------------------------------------------


def _stream(seed: int, name: str) -> random.Random:
    """Return a random generator for one part of the catalog.

    Each part (suppliers, products, each store's prices) has its own stream, so changing
    the number of products leaves the suppliers alone. `random.seed` (version 2, the
    default) turns a string seed into an integer from all its bytes, independently of
    PYTHONHASHSEED.
    """
    return random.Random(f"lojasync-demo:{seed}:{name}")


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _shelf_price(rng: random.Random, target_cents: int) -> int:
    """Return a shelf price at or below `target_cents`, ending in a usual retail ending.

    The result is at most R$ 1.00 below the target, and at least one cent.
    """
    ending = rng.choice(_PRICE_ENDINGS)
    cents = (target_cents // 100) * 100 + ending
    if cents > target_cents:
        cents -= 100
    return cents if cents >= 1 else max(target_cents, 1)


def _slug(text: str) -> str:
    """Return `text` as lower-case ASCII words joined by hyphens, for e-mail domains."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


class _SortedCodes:
    """NCM codes in order, for finding every code that starts with a prefix."""

    def __init__(self, codes: Sequence[str]) -> None:
        self._codes = sorted(codes)

    def starting_with(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._codes, prefix)
        matches: list[str] = []
        for code in self._codes[start:]:
            if not code.startswith(prefix):
                break
            matches.append(code)
        return matches

    def starting_with_any(self, prefixes: Sequence[str]) -> list[str]:
        found: set[str] = set()
        for prefix in prefixes:
            found.update(self.starting_with(prefix))
        return sorted(found)


def _resolve_fiscal_codes(
    kind: ProductKind, tables: ReferenceTables, ncm_codes: _SortedCodes
) -> list[tuple[str | None, list[str]]]:
    """Return the (CEST, NCM codes) pairs a product of `kind` may carry.

    For a kind with CESTs, each NCM starts with one of the kind's prefixes and one of the
    CEST's prefixes, which is what `check_cest` requires. Raises ReferenceTablesUnsuitable
    when a CEST is missing from the tables or no NCM fits.
    """
    kind_codes = ncm_codes.starting_with_any(kind.ncm_prefixes)
    if not kind.cests:
        if not kind_codes:
            raise ReferenceTablesUnsuitable(
                f"no NCM code in the reference tables starts with {', '.join(kind.ncm_prefixes)}, "
                f"the prefixes of product kind {kind.name!r}; load tables that contain them."
            )
        return [(None, kind_codes)]

    pairs: list[tuple[str | None, list[str]]] = []
    for cest in kind.cests:
        entry = tables.cest.get(cest)
        if entry is None:
            raise ReferenceTablesUnsuitable(
                f"CEST {cest} of product kind {kind.name!r} is not in the reference tables; "
                "load tables that contain it."
            )
        fitting = [
            code
            for code in kind_codes
            if not entry.ncm_prefixes or code.startswith(entry.ncm_prefixes)
        ]
        if not fitting:
            raise ReferenceTablesUnsuitable(
                f"no NCM code starts with both a prefix of product kind {kind.name!r} "
                f"({', '.join(kind.ncm_prefixes)}) and a prefix of CEST {cest} "
                f"({', '.join(entry.ncm_prefixes)}); fix the kind or the tables."
            )
        pairs.append((cest, fitting))
    return pairs


class _GtinAllocator:
    """Allocate unique GTINs with the Brazilian GS1 prefixes 789 and 790.

    Each brand gets a company prefix of 7 digits (the GS1 prefix and 4 digits) and numbers
    its items from a random start, so its GTIN-13s share a prefix as real ones do. A GTIN-14
    of a box is "1" (packaging level indicator) + the first 12 digits of the item's GTIN-13
    + a new check digit. GTIN-8s come from a shuffled pool of the 20,000 numbers that the
    two prefixes allow and run out after that.
    """

    _GS1_PREFIXES = ("789", "790")
    _ITEM_REFERENCES = 100_000
    _GTIN8_CAPACITY = 20_000

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used_company_prefixes: set[str] = set()
        self._next_item: dict[str, tuple[str, int]] = {}
        pool = list(range(self._GTIN8_CAPACITY))
        rng.shuffle(pool)
        self._gtin8_pool = pool

    def register_brand(self, brand: str) -> None:
        self._next_item[brand] = (self._new_company_prefix(), self._rng.randrange(1, 50_000))

    def _new_company_prefix(self) -> str:
        while True:
            prefix = f"{self._rng.choice(self._GS1_PREFIXES)}{self._rng.randrange(10_000):04d}"
            if prefix not in self._used_company_prefixes:
                self._used_company_prefixes.add(prefix)
                return prefix

    def gtin13(self, brand: str) -> str:
        company_prefix, item = self._next_item[brand]
        if item >= self._ITEM_REFERENCES:
            company_prefix, item = self._new_company_prefix(), 1
        self._next_item[brand] = (company_prefix, item + 1)
        body = f"{company_prefix}{item:05d}"
        return body + ean.calc_check_digit(body)

    @staticmethod
    def gtin14(gtin13: str) -> str:
        body = "1" + gtin13[:12]
        return body + ean.calc_check_digit(body)

    def gtin8(self) -> str | None:
        if not self._gtin8_pool:
            return None
        number = self._gtin8_pool.pop()
        body = f"{self._GS1_PREFIXES[number // 10_000]}{number % 10_000:04d}"
        return body + ean.calc_check_digit(body)


# --- Generators ---------------------------------------------------------------------------


def _unit_records() -> list[Record]:
    return [
        {"code": code, "description": description, "fractional": fractional}
        for code, description, fractional in UNITS
    ]


def _payment_method_records() -> list[Record]:
    return [
        {"code": code, "description": description, "kind": kind, "active": True}
        for code, description, kind in PAYMENT_METHODS
    ]


def _tax_rule_records() -> list[Record]:
    records: list[Record] = []
    for rule in TAX_RULES:
        record: Record = {
            "code": rule.code,
            "description": rule.description,
            "cfop": rule.cfop,
            "icms_cst": rule.icms_cst,
            "icms_rate": rule.icms_rate,
            "pis_cst": rule.pis_cst,
            "cofins_cst": rule.cofins_cst,
        }
        if rule.ncm_prefix is not None:
            record["ncm_prefix"] = rule.ncm_prefix
        records.append(record)
    return records


def _cnpj(rng: random.Random, *, alphanumeric: bool) -> str:
    """Return a CNPJ with valid check digits: an 8-character root, a branch, 2 digits.

    An alphanumeric CNPJ has letters in its root, as issued from July 2026.
    """
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" if alphanumeric else "0123456789"
    while True:
        root = "".join(rng.choice(alphabet) for _ in range(8))
        if alphanumeric and root.isdigit():
            continue
        branch = "0001" if rng.random() < 0.85 else f"{rng.randrange(2, 40):04d}"
        body = root + branch
        if len(set(body)) > 1:
            return body + stdnum_cnpj.calc_check_digits(body)


def _supplier_names(rng: random.Random) -> tuple[str, str]:
    """Return a plausible (legal name, trade name) of a Brazilian supplier."""
    sector, trade_sector, makers = rng.choice(SUPPLIER_SECTORS)
    family = rng.choice(SUPPLIER_FAMILY_NAMES)
    legal_form = rng.choice(SUPPLIER_LEGAL_FORMS)
    pattern = rng.randrange(4)
    if pattern == 0:
        prefix = rng.choice(SUPPLIER_TRADER_PREFIXES)
        return f"{prefix} {family} {sector} {legal_form}", f"{family} {trade_sector}"
    if pattern == 1:
        partner = rng.choice([name for name in SUPPLIER_FAMILY_NAMES if name != family])
        legal_name = f"{family} & {partner} Comércio {sector} {legal_form}"
        return legal_name, f"{family} & {partner}"
    if pattern == 2:
        return f"Irmãos {family} Indústria e Comércio {sector} Ltda", f"Irmãos {family}"
    place = rng.choice(SUPPLIER_PLACE_NAMES)
    maker = rng.choice(makers)
    if maker.startswith("Cooperativa"):
        # A cooperative is neither a Ltda nor an S.A., so its name carries neither suffix.
        return f"{maker} {place}", f"Coop {place}"
    return f"{maker} {place} {legal_form}", f"{place} {trade_sector}"


def _supplier_records(seed: int, tables: ReferenceTables) -> list[Record]:
    rng = _stream(seed, "supplier")
    municipalities = sorted(tables.municipalities)
    cnpjs: set[str] = set()
    legal_names: set[str] = set()
    records: list[Record] = []
    for index in range(SUPPLIER_COUNT):
        alphanumeric = index % ALPHANUMERIC_CNPJ_EVERY == ALPHANUMERIC_CNPJ_EVERY - 1
        cnpj = _cnpj(rng, alphanumeric=alphanumeric)
        while cnpj in cnpjs:
            cnpj = _cnpj(rng, alphanumeric=alphanumeric)
        cnpjs.add(cnpj)

        legal_name, trade_name = _supplier_names(rng)
        while legal_name in legal_names:
            legal_name, trade_name = _supplier_names(rng)
        legal_names.add(legal_name)

        record: Record = {"cnpj": cnpj, "legal_name": legal_name}
        if rng.random() < SUPPLIER_TRADE_NAME_SHARE:
            record["trade_name"] = trade_name
        record["municipality"] = rng.choice(municipalities) if municipalities else None
        if rng.random() < SUPPLIER_EMAIL_SHARE:
            # ".example" is reserved (RFC 2606), so no demo address reaches a real mailbox.
            record["email"] = f"nfe@{_slug(trade_name)}.example"
        records.append(record)
    return records


def _brands_by_department(rng: random.Random) -> dict[str, list[str]]:
    """Assign BRANDS_PER_DEPARTMENT distinct brands to each department."""
    names = [f"{first} {second}" for first in BRAND_FIRST_WORDS for second in BRAND_SECOND_WORDS]
    rng.shuffle(names)
    brands: dict[str, list[str]] = {}
    for index, department in enumerate(DEPARTMENTS):
        start = index * BRANDS_PER_DEPARTMENT
        brands[department] = sorted(names[start : start + BRANDS_PER_DEPARTMENT])
    return brands


@dataclass(frozen=True)
class _KindChoice:
    kind: ProductKind
    fiscal_codes: list[tuple[str | None, list[str]]]


class _ProductGenerator:
    """Generate products in sequence.

    Product n depends only on the products before it, so a smaller catalog is a prefix of
    a larger one with the same seed.
    """

    def __init__(self, seed: int, tables: ReferenceTables) -> None:
        ncm_codes = _SortedCodes(list(tables.ncm))
        choices = [
            _KindChoice(kind, _resolve_fiscal_codes(kind, tables, ncm_codes))
            for kind in PRODUCT_KINDS
        ]
        self._cest_kinds = [choice for choice in choices if choice.kind.cests]
        self._plain_kinds = [choice for choice in choices if not choice.kind.cests]

        brand_rng = _stream(seed, "brand")
        self._brands = _brands_by_department(brand_rng)
        self._gtins = _GtinAllocator(_stream(seed, "gtin"))
        for department in DEPARTMENTS:
            for brand in self._brands[department]:
                self._gtins.register_brand(brand)

        self._rng = _stream(seed, "product")
        self._price_rng = _stream(seed, "price")
        self._descriptions: set[str] = set()

    def next_product(self, number: int) -> tuple[Record, int]:
        """Return product `number` (1-based) and its base shelf price in cents."""
        rng = self._rng
        kinds = self._cest_kinds if rng.random() < CEST_SHARE else self._plain_kinds
        for _ in range(DESCRIPTION_ATTEMPTS):
            choice = rng.choice(kinds)
            kind = choice.kind
            variant = rng.choice(kind.variants)
            size_label, size_factor = rng.choice(kind.sizes)
            brand = rng.choice(self._brands[kind.department])
            description = f"{kind.name} {variant} {brand} {size_label}"
            # After the last attempt a repeated description is kept, because unique
            # descriptions are only for realism. Codes and GTINs stay unique regardless.
            if description not in self._descriptions:
                break
        self._descriptions.add(description)

        cest, ncm_codes = rng.choice(choice.fiscal_codes)
        ncm = rng.choice(ncm_codes)

        gtins = [self._gtins.gtin13(brand)]
        if rng.random() < GTIN14_SHARE:
            gtins.append(self._gtins.gtin14(gtins[0]))
        if rng.random() < GTIN8_SHARE:
            gtin8 = self._gtins.gtin8()
            if gtin8 is not None:
                gtins.append(gtin8)

        record: Record = {
            "code": f"P{number:06d}",
            "description": description,
            "gtins": gtins,
            "ncm": ncm,
        }
        if cest is not None:
            record["cest"] = cest
        record["unit"] = kind.unit
        record["brand"] = brand
        record["active"] = True

        low, high = kind.price_range
        target = round(self._price_rng.uniform(low, high) * size_factor * 100)
        return record, _shelf_price(self._price_rng, target)


def _price_table_code(store_id: str) -> str:
    return store_id.upper()


def _check_store_ids(store_ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for store_id in store_ids:
        if not isinstance(store_id, str) or _STORE_ID.fullmatch(store_id) is None:
            raise CatalogOptionsInvalid(
                f"store id {store_id!r} is invalid; use 1 to 40 characters from a-z, 0-9 "
                "and -, e.g. loja-1.",
                f"o id de loja {store_id!r} é inválido; use de 1 a 40 caracteres entre a-z, "
                "0-9 e -, por exemplo loja-1.",
            )
        code = _price_table_code(store_id)
        if len(code) > _PRICE_TABLE_CODE_MAX:
            raise CatalogOptionsInvalid(
                f"store id {store_id!r} is longer than {_PRICE_TABLE_CODE_MAX} characters, "
                "so it cannot name the store's price table; use a shorter store id.",
                f"o id de loja {store_id!r} tem mais de {_PRICE_TABLE_CODE_MAX} caracteres e "
                "não pode nomear a tabela de preços da loja; use um id mais curto.",
            )
        if code == BASE_PRICE_TABLE:
            raise CatalogOptionsInvalid(
                f"store id {store_id!r} would name its price table {BASE_PRICE_TABLE}, the "
                "table of every store; use another store id.",
                f"o id de loja {store_id!r} daria à tabela de preços da loja o nome "
                f"{BASE_PRICE_TABLE}, a tabela de todas as lojas; use outro id.",
            )
        if store_id in seen:
            raise CatalogOptionsInvalid(
                f"store id {store_id!r} appears more than once; list each store once.",
                f"o id de loja {store_id!r} aparece mais de uma vez; informe cada loja uma vez.",
            )
        seen.add(store_id)


def _price_table_records(store_ids: Sequence[str]) -> list[Record]:
    records: list[Record] = [
        {"code": BASE_PRICE_TABLE, "description": "Tabela base de todas as lojas", "stores": []}
    ]
    for store_id in store_ids:
        records.append(
            {
                "code": _price_table_code(store_id),
                "description": f"Preços próprios da loja {store_id}",
                "stores": [store_id],
            }
        )
    return records


def _store_price(rng: random.Random, table: str, product: str, base_cents: int) -> Record:
    """Return a store-table price near the base price, sometimes with a promotion."""
    cents = _shelf_price(rng, round(base_cents * rng.uniform(0.92, 1.10)))
    record: Record = {"table": table, "product": product, "price": _money(cents)}
    if rng.random() < STORE_PROMOTION_SHARE:
        promotion = _shelf_price(rng, round(cents * rng.uniform(0.75, 0.92)))
        if promotion < cents:
            record["promotional_price"] = _money(promotion)
    return record


def build_catalog(
    tables: ReferenceTables,
    *,
    products: int = DEFAULT_PRODUCTS,
    seed: int = DEFAULT_SEED,
    store_ids: Sequence[str] = DEFAULT_STORE_IDS,
) -> Catalog:
    """Generate the demo catalog on the codes of `tables`.

    The catalog contains the reference tables, the units, SUPPLIER_COUNT suppliers, the
    payment methods and the tax rules. It also contains `products` products with one price
    each in the BASE table, which every store receives. Each store gets its own price table,
    with prices for about STORE_PRICE_SHARE of the products.

    Raises CatalogOptionsInvalid for a negative `products` or an unusable store id, and
    ReferenceTablesUnsuitable when the tables lack the codes of a product kind.
    """
    if products < 0:
        raise CatalogOptionsInvalid(
            f"products is {products}; ask for 0 or more products.",
            f"products é {products}; peça 0 ou mais produtos.",
        )
    _check_store_ids(store_ids)

    catalog = Catalog({entity: [] for entity in PUSH_ORDER})
    for entity, record in reference_records(tables):
        catalog.records[entity].append(record)
    catalog.records["unit"] = _unit_records()
    catalog.records["supplier"] = _supplier_records(seed, tables)
    catalog.records["payment_method"] = _payment_method_records()
    catalog.records["tax_rule"] = _tax_rule_records()
    catalog.records["price_table"] = _price_table_records(store_ids)

    generator = _ProductGenerator(seed, tables)
    store_streams = [
        (_price_table_code(store_id), _stream(seed, f"store-price:{store_id}"))
        for store_id in store_ids
    ]
    product_records = catalog.records["product"]
    base_prices: list[Record] = []
    store_prices: dict[str, list[Record]] = {table: [] for table, _ in store_streams}
    for number in range(1, products + 1):
        product, base_cents = generator.next_product(number)
        code = str(product["code"])
        product_records.append(product)
        base_prices.append(
            {"table": BASE_PRICE_TABLE, "product": code, "price": _money(base_cents)}
        )
        for table, rng in store_streams:
            if rng.random() < STORE_PRICE_SHARE:
                store_prices[table].append(_store_price(rng, table, code, base_cents))

    catalog.records["price"] = base_prices
    for table, _ in store_streams:
        catalog.records["price"].extend(store_prices[table])
    return catalog


# --- Command line -------------------------------------------------------------------------


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lojasync_demo.catalog",
        description="Write a generated retail catalog as JSON lines: "
        '{"entity": ..., "record": ...}, one record per line, in push order.',
    )
    parser.add_argument(
        "--products",
        type=int,
        default=DEFAULT_PRODUCTS,
        help="number of products (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output file (.jsonl), overwritten")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="random seed; the same seed gives the same catalog (default: %(default)s)",
    )
    parser.add_argument(
        "--store",
        dest="store_ids",
        action="append",
        metavar="STORE_ID",
        help="store id that gets its own price table; repeat for each store "
        f"(default: {', '.join(DEFAULT_STORE_IDS)})",
    )
    parser.add_argument("--lang", help="output language: en or pt-BR (default: from LANG)")
    return parser.parse_args(argv)


def _write_jsonl(catalog: Catalog, path: Path) -> None:
    with path.open("w", encoding="utf-8") as output:
        for entity, record in catalog.ordered():
            output.write(json.dumps({"entity": entity, "record": record}, ensure_ascii=False))
            output.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the catalog, write it to --out and print the count per entity.

    Returns the exit status: 0 on success, 1 when the reference tables cannot be used or
    the file cannot be written, 2 for invalid options.
    """
    arguments = _parse_arguments(argv)
    portuguese = detect_language(arguments.lang) == PORTUGUESE
    store_ids = tuple(arguments.store_ids) if arguments.store_ids else DEFAULT_STORE_IDS

    started = time.perf_counter()
    try:
        catalog = build_catalog(
            load_reference_tables(),
            products=arguments.products,
            seed=arguments.seed,
            store_ids=store_ids,
        )
    except CatalogOptionsInvalid as exc:
        print(exc.message_pt_br if portuguese else exc.message, file=sys.stderr)
        return 2
    except (ConfigurationError, ReferenceTablesUnsuitable) as exc:
        # These errors carry an English message only, so the Portuguese output keeps it.
        if portuguese:
            print(f"não foi possível usar as tabelas de referência: {exc}", file=sys.stderr)
        else:
            print(f"cannot use the reference tables: {exc}", file=sys.stderr)
        return 1
    try:
        _write_jsonl(catalog, arguments.out)
    except OSError as exc:
        if portuguese:
            print(f"não foi possível gravar {arguments.out}: {exc.strerror}", file=sys.stderr)
        else:
            print(f"cannot write {arguments.out}: {exc.strerror}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started

    counts = catalog.counts()
    total = sum(counts.values())
    if portuguese:
        print(f"{total} registros gravados em {arguments.out} em {elapsed:.1f} s:")
    else:
        print(f"Wrote {total} records to {arguments.out} in {elapsed:.1f} s:")
    width = max(len(entity) for entity in counts)
    for entity, count in counts.items():
        print(f"  {entity:<{width}}  {count:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
